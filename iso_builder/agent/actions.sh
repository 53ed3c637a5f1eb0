# netbootd agent: the actions netbootd hands out from /api/v1/agent/next (busybox sh).
# Sourced after lib.sh by init.  Reports to /api/v1/agent/report:
#   wipe             "started", then "done" (every disk verified) or "failed";
#                    only the listed disks, only when `confirm` is this host's MAC
#   boot             "booting" once kernel and initrds are fetched and loaded
#                    (right before kexec -e), else "failed" and a reboot
#   poweroff/reboot  "started" (the last word: the host goes away)
#   capture          "started", then "done" (sha256 of what was read) or "failed";
#                    capture.sh (sourced at the end of this file)

KEXEC_LIBS=/usr/lib/netbootd   # kexec's shared libraries (iso_builder/kexec.py packs them)

# report ID ACTION STATUS [DETAIL_JSON]
report() {
  detail=$4
  [ -n "$detail" ] || detail='{}'
  printf '{"id":%s,"action":"%s","status":"%s","detail":%s}\n' \
    "$(jnum "$1")" "$(json "$2")" "$(json "$3")" "$detail" > "$NB_RUN/report.json"
  api POST /api/v1/agent/report "$NB_RUN/report.json"
  case "$http_status" in
    2??) marker "report id=$(oneline "$1") action=$2 status=$3" ;;
    *) marker "FAILED report id=$(oneline "$1") action=$2 status=$3 error=$(oneline "$http_error")" ;;
  esac
}

# --- wipe ---------------------------------------------------------------------------
# zeros DEV OFFSET LEN: LEN bytes at OFFSET read back (O_DIRECT, past the page
# cache) as zeros; a short read is a failure (cmp sees EOF).
zeros() {
  dd if="$1" bs="$3" count=1 skip="$2" iflag=skip_bytes,direct 2>/dev/null |
    cmp -s -n "$3" - /dev/zero
}

# zero DEV OFFSET LEN: write LEN zero bytes at OFFSET (O_DIRECT, fsync'ed).
zero() {
  dd if=/dev/zero of="$1" bs="$3" count=1 seek="$2" oflag=seek_bytes,direct \
    conv=notrunc,fsync 2> "$NB_RUN/dd.err"
}

# wipe_disk NAME: wipes one disk, appends its JSON result to $NB_RUN/wipe.disks,
# returns 0 when it verified.
wipe_disk() {
  # wipe_disk NAME [EXPECT_BYTES EXPECT_SERIAL]: the server sends the size and
  # serial the inventory reported; a disk name can move between boots (USB
  # media reorder sdX), so a disk that is not the one the admin saw is refused.
  name=$1
  method="" wbytes=0 verified=false err="" note=""
  dev=/dev/$name
  b=$SYS/block/$name
  case "$name" in
    ''|*[!A-Za-z0-9_-]*) err="not a disk name" ;;
    *) if [ ! -d "$b" ] || [ ! -b "$dev" ]; then err="no such disk"
       elif [ "$(rd "$b/ro")" = 1 ]; then err="read-only disk"
       fi ;;
  esac
  size=0
  if [ -z "$err" ]; then
    size=$(( $(number "$(rd "$b/size")" 0) * 512 ))
    [ "$size" -gt 0 ] || err="disk has no medium (size 0)"
  fi
  if [ -z "$err" ] && [ -n "$2" ] && [ "$2" != "$size" ]; then
    err="size $size is not the $2 bytes of the inventory: not the disk the admin chose"
  fi
  if [ -z "$err" ] && [ -n "$3" ] && [ "$3" != "$(disk_serial "$b")" ]; then
    err="serial is not the inventory's: not the disk the admin chose"
  fi
  if [ -z "$err" ]; then
    # Regions we promise: the first and the last MiB (signatures, MBR/GPT and
    # its backup, RAID/LVM/ZFS labels); a disk of <= 2 MiB is one region.
    if [ "$size" -le $((2 * MiB)) ]; then
      region=$size last=0
    else
      region=$MiB last=$((size - MiB))
    fi
    dmax=$(number "$(rd "$b/queue/discard_max_bytes")" 0)
    if [ "$dmax" -gt 0 ]; then
      if blkdiscard "$dev" 2> "$NB_RUN/dd.err"; then
        blockdev --flushbufs "$dev" 2>/dev/null
        ok=1
        zeros "$dev" 0 "$region" || ok=0
        [ "$last" = 0 ] || zeros "$dev" "$last" "$region" || ok=0
        # plus 4 sampled MiB anywhere on the disk
        mibs=$((size / MiB))
        i=0
        while [ $ok = 1 ] && [ $i -lt 4 ] && [ "$mibs" -gt 2 ]; do
          off=$(( ( ( $(rand16) * 65536 + $(rand16) ) % mibs ) * MiB ))
          [ $((off + MiB)) -le "$size" ] && { zeros "$dev" "$off" "$MiB" || ok=0; }
          i=$((i + 1))
        done
        if [ $ok = 1 ]; then
          method=blkdiscard wbytes=$size verified=true
        else
          note="discard did not read back zeros; zeroed instead"
        fi
      else
        note="blkdiscard failed: $(oneline "$(cat "$NB_RUN/dd.err")"); zeroed instead"
      fi
    fi
    if [ "$verified" != true ]; then
      method=zero
      if zero "$dev" 0 "$region" && { [ "$last" = 0 ] || zero "$dev" "$last" "$region"; }; then
        wbytes=$region
        [ "$last" = 0 ] || wbytes=$((2 * region))
        blockdev --flushbufs "$dev" 2>/dev/null
        if zeros "$dev" 0 "$region" && { [ "$last" = 0 ] || zeros "$dev" "$last" "$region"; }; then
          verified=true
        else
          err="zeroed regions did not read back as zeros"
        fi
      else
        err="write failed: $(oneline "$(cat "$NB_RUN/dd.err")")"
      fi
    fi
  fi
  if [ "$verified" = true ]; then result=ok; v=yes; else result=failed; v=no; fi
  marker "wipe disk=$(oneline "$name") method=${method:-none} bytes=$wbytes verified=$v${err:+ error=$(oneline "$err")}"
  [ -s "$NB_RUN/wipe.disks" ] && printf ',' >> "$NB_RUN/wipe.disks"
  printf '{"name":%s,"method":%s,"bytes":%s,"verified":%s,"result":"%s","error":%s,"note":%s}' \
    "$(jstr "$name")" "$(jstr "$method")" "$(jnum "$wbytes")" "$verified" "$result" \
    "$(jstr "$err")" "$(jstr "$note")" >> "$NB_RUN/wipe.disks"
  [ "$verified" = true ]
}

# act_wipe ID FLAT: the listed disks, when confirm is this host's MAC.
act_wipe() {
  id=$1
  confirm=$(jget "$2" confirm | tr 'A-F' 'a-f')
  jlist "$2" disks > "$NB_RUN/wipe.list"
  report "$id" wipe started
  : > "$NB_RUN/wipe.disks"
  if [ -z "$host_mac" ] || [ "$confirm" != "$host_mac" ]; then
    marker "FAILED wipe id=$(oneline "$id"): confirm '$(oneline "$confirm")' is not this host's MAC $host_mac"
    report "$id" wipe failed "{\"error\":\"confirm does not match this host's MAC\",\"disks\":[]}"
    return
  fi
  if [ ! -s "$NB_RUN/wipe.list" ]; then
    report "$id" wipe failed '{"error":"no disks listed","disks":[]}'
    return
  fi
  all=1
  i=0
  while read -r d; do
    want_name=$(jget "$2" "expect.$i.name")
    want_bytes="" want_serial=""
    if [ "$want_name" = "$d" ]; then
      want_bytes=$(jget "$2" "expect.$i.bytes")
      want_serial=$(jget "$2" "expect.$i.serial")
    fi
    wipe_disk "$d" "$want_bytes" "$want_serial" || all=0
    i=$((i + 1))
  done < "$NB_RUN/wipe.list"
  if [ $all = 1 ]; then st=done; else st=failed; fi
  report "$id" wipe "$st" "{\"disks\":[$(cat "$NB_RUN/wipe.disks")]}"
}

# --- boot ---------------------------------------------------------------------------
# An absolute http(s) URL from what the server sent ("/files/x" is on $server).
abs_url() {
  case "$1" in
    http://*|https://*) printf '%s' "$1" ;;
    /*) printf '%s%s' "$server" "$1" ;;
    *) printf '' ;;
  esac
}

fetch() {  # fetch URL FILE: through the pinned TLS client for https (lib.sh nb_fetch)
  nb_fetch "$1" "$2"
}

# act_boot ID FLAT: fetch kernel + initrd(s), kexec -l, report booting, kexec -e;
# on any failure report it and reboot so PXE picks up the assignment.
act_boot() {
  id=$1
  kernel=$(abs_url "$(jget "$2" kernel)")
  cmdline=$(jget "$2" cmdline)
  jlist "$2" initrd > "$NB_RUN/boot.initrds"
  [ -s "$NB_RUN/boot.initrds" ] || jget "$2" initrd > "$NB_RUN/boot.initrds"
  why=""
  rm -rf /tmp/boot
  mkdir -p /tmp/boot
  if [ -z "$kernel" ]; then
    why="no kernel URL"
  elif ! fetch "$kernel" /tmp/boot/kernel; then
    why="kernel download failed: $(oneline "$(cat "$NB_RUN/wget.err")")"
  fi
  : > /tmp/boot/initrd
  n=0
  while [ -z "$why" ] && read -r u; do
    [ -n "$u" ] || continue
    url=$(abs_url "$u")
    n=$((n + 1))
    # Several initrds are concatenated: the kernel unpacks cpio archives back to back.
    if [ -z "$url" ] || ! fetch "$url" /tmp/boot/part; then
      why="initrd download failed ($(oneline "$u")): $(oneline "$(cat "$NB_RUN/wget.err" 2>/dev/null)")"
    else
      cat /tmp/boot/part >> /tmp/boot/initrd
      rm -f /tmp/boot/part
    fi
  done < "$NB_RUN/boot.initrds"
  if [ -z "$why" ] && ! command -v kexec > /dev/null; then
    why="kexec is not in this initrd"
  fi
  if [ -z "$why" ]; then
    set -- --load /tmp/boot/kernel "--command-line=$cmdline"
    [ "$n" -gt 0 ] && set -- "$@" --initrd=/tmp/boot/initrd
    # the command line is not printed: a profile's cmdline may carry credentials
    marker "kexec load kernel=$(oneline "$kernel") initrds=$n cmdline_bytes=${#cmdline}"
    if LD_LIBRARY_PATH=$KEXEC_LIBS kexec "$@" > "$NB_RUN/kexec.err" 2>&1; then
      report "$id" boot booting
      marker "kexec exec"
      sync
      LD_LIBRARY_PATH=$KEXEC_LIBS kexec -e > "$NB_RUN/kexec.err" 2>&1
      why="kexec -e returned: $(oneline "$(cat "$NB_RUN/kexec.err")")"
    else
      why="kexec load failed: $(oneline "$(cat "$NB_RUN/kexec.err")")"
    fi
  fi
  marker "FAILED boot id=$(oneline "$id"): $why; rebooting so PXE boots the assignment"
  report "$id" boot failed "{\"error\":$(jstr "$why"),\"fallback\":\"reboot\"}"
  finish reboot
}

# --- dispatch -----------------------------------------------------------------------
# act ACTION ID FLAT: returns 1 for "wait" (nothing done), 0 otherwise.
act() {
  case "$1" in
    ''|wait) return 1 ;;
  esac
  marker "next action=$(oneline "$1") id=$(oneline "$2")"
  case "$1" in
    poweroff|reboot)
      report "$2" "$1" started
      finish "$1"
      ;;
    wipe) act_wipe "$2" "$3" ;;
    boot) act_boot "$2" "$3" ;;
    capture) act_capture "$2" "$3" ;;
    *)
      marker "FAILED action=$(oneline "$1") (unsupported, ignored)"
      report "$2" "$(oneline "$1" | tr -cd 'a-z_-')" failed '{"error":"unsupported action"}'
      ;;
  esac
  return 0
}

# --- capture (capture.sh) -------------------------------------------------------------
. "$NB_LIB/capture.sh"

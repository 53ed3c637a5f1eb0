# netbootd agent: the hardware inventory, from /proc and /sys only (busybox sh).
# Sourced after lib.sh.  inventory_json prints the document of
# docs/agent-protocol.md (schema 1) on one line; every string is read with rd
# (printable ASCII, trimmed) and JSON-escaped, every number checked.
#
# Where each fact comes from (and how close it is to what qemu was given):
#   cpu      /sys/devices/system/cpu/cpuN/topology (package and core ids of the
#            online CPUs): sockets = distinct packages, cores = distinct
#            (package, core) pairs in total, threads = online CPUs; model from
#            /proc/cpuinfo "model name".  Without topology: /proc/cpuinfo
#            "physical id"/"core id", else sockets 1 and cores = threads.
#   memory   installed, in order of preference: the SMBIOS memory devices
#            (type 17 entries in /sys/firmware/dmi/entries, what dmidecode
#            reads: `qemu -m 512` gives exactly 512 MiB), else the online
#            memory blocks (/sys/devices/system/memory: exact for -m multiples
#            of the block size, 128 MiB on x86-64), else MemTotal (what the
#            kernel manages: ~5-10% below the installed size).  extra.memory_source
#            names the one used.
#   disks    /sys/block (not loop/ram/zram/dm/md/sr/fd): size in 512-byte
#            sectors, model (device/model), serial (virtio: serial; others
#            device/serial or SCSI VPD page 0x80), queue/rotational, ro, and
#            the transport from the device path (usb, ata, nvme, scsi, virtio, mmc).
#   nics     /sys/class/net with a device (physical) of type 1 (Ethernet):
#            address, device/driver link, carrier, speed (null when unknown).
#   dmi      /sys/class/dmi/id (serials and UUID are root-only: we are PID 1).
#   firmware uefi when /sys/firmware/efi exists; secure_boot from the
#            SecureBoot EFI variable's data byte (null on BIOS or unreadable).

EFI_GLOBAL=8be4df61-93ca-11d2-aa0d-00e098032b8c

# Distinct non-empty lines on stdin.
count_distinct() {
  sed '/^$/d' | sort -u | wc -l | tr -cd '0-9'
}

inv_cpu() {
  model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' "$PROC/cpuinfo" 2>/dev/null | head -n 1)
  [ -n "$model" ] || model=$(sed -n 's/^\(cpu model\|Processor\|cpu\)[[:space:]]*:[[:space:]]*//p' \
    "$PROC/cpuinfo" 2>/dev/null | head -n 1)
  model=$(printf '%s' "$model" | tr -cd '\040-\176' | sed -e 's/^ *//' -e 's/ *$//' -e 's/  */ /g')
  threads=0
  : > "$NB_RUN/cpu.pkgs"
  : > "$NB_RUN/cpu.cores"
  for c in "$SYS"/devices/system/cpu/cpu[0-9]*; do
    [ -d "$c" ] || continue
    online=1
    [ -r "$c/online" ] && online=$(rd "$c/online")
    [ "$online" = 1 ] || continue
    threads=$((threads + 1))
    pkg=$(rd "$c/topology/physical_package_id")
    core=$(rd "$c/topology/core_id")
    if [ -n "$pkg" ] && [ -n "$core" ]; then
      echo "$pkg" >> "$NB_RUN/cpu.pkgs"
      echo "$pkg:$core" >> "$NB_RUN/cpu.cores"
    fi
  done
  sockets=$(count_distinct < "$NB_RUN/cpu.pkgs")
  cores=$(count_distinct < "$NB_RUN/cpu.cores")
  if [ "$threads" = 0 ] || [ "$sockets" = 0 ]; then
    # No sysfs topology: /proc/cpuinfo (x86 has physical id / core id).
    awk -F ':' '
      /^processor[ \t]*:/ { n++ }
      /^physical id[ \t]*:/ { p = $2 + 0; pk[p] = 1 }
      /^core id[ \t]*:/ { co[p ":" ($2 + 0)] = 1 }
      END { s = 0; c = 0; for (k in pk) s++; for (k in co) c++; print n + 0, s, c }
    ' "$PROC/cpuinfo" > "$NB_RUN/cpu.info" 2>/dev/null
    read -r t s c < "$NB_RUN/cpu.info"
    [ "$threads" != 0 ] || threads=$(number "$t" 0)
    sockets=$(number "$s" 0)
    cores=$(number "$c" 0)
  fi
  [ "$threads" -ge 1 ] 2>/dev/null || threads=1
  [ "$sockets" -ge 1 ] 2>/dev/null || sockets=1
  [ "$cores" -ge 1 ] 2>/dev/null || cores=$threads
  printf '{"model":%s,"sockets":%s,"cores":%s,"threads":%s}' \
    "$(jstr "$model")" "$(jnum "$sockets")" "$(jnum "$cores")" "$(jnum "$threads")"
}

# Bytes of one SMBIOS type 17 (memory device) entry's raw table, 0 if empty/unknown.
dmi17_bytes() {
  # shellcheck disable=SC2046
  set -- $(od -An -tu1 -N 32 "$1" 2>/dev/null)
  [ $# -ge 14 ] || { echo 0; return; }
  len=$2
  size=$(( ${13} + ${14} * 256 ))
  if [ "$size" = 0 ] || [ "$size" = 65535 ]; then
    echo 0
  elif [ "$size" = 32767 ] && [ "$len" -ge 32 ] && [ $# -ge 32 ]; then
    # Extended Size (offset 0x1C, MiB, bits 0-30)
    echo $(( (${29} + ${30} * 256 + ${31} * 65536 + (${32} & 127) * 16777216) * MiB ))
  elif [ $((size & 32768)) != 0 ]; then
    echo $(( (size & 32767) * 1024 ))
  else
    echo $(( size * MiB ))
  fi
}

inv_memory() {
  mem=0
  mem_source=""
  for e in "$SYS"/firmware/dmi/entries/17-*; do
    [ -r "$e/raw" ] || continue
    mem=$((mem + $(dmi17_bytes "$e/raw")))
  done
  if [ "$mem" -gt 0 ]; then
    mem_source=smbios
  else
    bs=$(rd "$SYS/devices/system/memory/block_size_bytes")
    case "$bs" in
      ''|*[!0-9a-fA-F]*) bs="" ;;
    esac
    if [ -n "$bs" ]; then
      blocks=0
      for b in "$SYS"/devices/system/memory/memory[0-9]*; do
        [ "$(rd "$b/online")" = 1 ] && blocks=$((blocks + 1))
      done
      mem=$((blocks * 0x$bs))
      mem_source=memory-blocks
    fi
  fi
  if [ "$mem" -le 0 ]; then
    kb=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB.*/\1/p' "$PROC/meminfo" 2>/dev/null)
    mem=$(( $(number "$kb" 0) * 1024 ))
    mem_source=meminfo
  fi
  printf '{"bytes":%s}' "$(jnum "$mem")"
}

# Transport of a block device from its sysfs device path.
disk_transport() {
  case "$1" in
    */usb[0-9]*) echo usb ;;
    */ata[0-9]*) echo ata ;;
    */nvme*) echo nvme ;;
    */target[0-9]*) echo scsi ;;
    */virtio[0-9]*) echo virtio ;;
    */mmc*) echo mmc ;;
    *) echo "" ;;
  esac
}

disk_serial() {
  b=$1
  s=$(rd "$b/serial")
  [ -n "$s" ] || s=$(rd "$b/device/serial")
  if [ -z "$s" ] && [ -r "$b/device/vpd_pg80" ]; then
    # VPD page 0x80: 4-byte header, then the unit serial number.
    s=$(dd if="$b/device/vpd_pg80" bs=1 skip=4 count=252 2>/dev/null | tr -cd '\040-\176' |
        sed -e 's/^ *//' -e 's/ *$//')
  fi
  printf '%s' "$s"
}

inv_disks() {
  first=1
  printf '['
  for b in "$SYS"/block/*; do
    [ -e "$b" ] || continue
    name=${b##*/}
    case "$name" in loop*|ram*|zram*|dm-*|md*|sr*|fd*|nbd*) continue ;; esac
    [ -e "$b/device" ] || continue
    path=$(readlink -f "$b")
    sectors=$(number "$(rd "$b/size")" 0)
    rot=$(rd "$b/queue/rotational")
    ro=$(rd "$b/ro")
    [ $first = 1 ] || printf ','
    first=0
    printf '{"name":%s,"bytes":%s,"model":%s,"serial":%s,"rotational":%s,"transport":%s,' \
      "$(jstr "$name")" "$(jnum $((sectors * 512)))" "$(jstr "$(rd "$b/device/model")")" \
      "$(jstr "$(disk_serial "$b")")" "$(jbool "$rot")" "$(jstr "$(disk_transport "$path")")"
    printf '"readonly":%s,"removable":%s}' "$(jbool "$ro")" "$(jbool "$(rd "$b/removable")")"
  done
  printf ']'
}

# Physical Ethernet NICs (names, one per line).
physical_nics() {
  for p in "$SYS"/class/net/*; do
    [ -e "$p/device" ] || continue
    [ "$(rd "$p/type")" = 1 ] || continue
    echo "${p##*/}"
  done
}

inv_nics() {
  first=1
  printf '['
  for n in $(physical_nics); do
    p=$SYS/class/net/$n
    drv=""
    [ -e "$p/device/driver" ] && drv=$(readlink "$p/device/driver") && drv=${drv##*/}
    speed=$(rd "$p/speed")
    case "$speed" in ''|*[!0-9]*|0) speed="" ;; esac
    [ $first = 1 ] || printf ','
    first=0
    printf '{"name":%s,"mac":%s,"driver":%s,"link":%s,"speed":%s,"mtu":%s}' \
      "$(jstr "$n")" "$(jstr "$(rd "$p/address" | tr 'A-F' 'a-f')")" \
      "$(jstr "$(printf '%s' "$drv" | tr -cd '\040-\176')")" \
      "$(jbool "$(rd "$p/carrier")")" "$(jnum "$speed")" "$(jnum "$(rd "$p/mtu")")"
  done
  printf ']'
}

dmi() { rd "$SYS/class/dmi/id/$1"; }

inv_dmi() {
  printf '{"system":{"vendor":%s,"product":%s,"serial":%s,"uuid":%s},' \
    "$(jstr "$(dmi sys_vendor)")" "$(jstr "$(dmi product_name)")" \
    "$(jstr "$(dmi product_serial)")" "$(jstr "$(dmi product_uuid | tr 'A-F' 'a-f')")"
  printf '"board":{"vendor":%s,"product":%s,"serial":%s},' \
    "$(jstr "$(dmi board_vendor)")" "$(jstr "$(dmi board_name)")" "$(jstr "$(dmi board_serial)")"
  printf '"bios":{"vendor":%s,"version":%s,"date":%s}}' \
    "$(jstr "$(dmi bios_vendor)")" "$(jstr "$(dmi bios_version)")" "$(jstr "$(dmi bios_date)")"
}

# true / false / null: the SecureBoot variable's data byte (after 4 attribute bytes).
secure_boot() {
  vars=$SYS/firmware/efi/efivars
  [ -d "$SYS/firmware/efi" ] || { printf 'null'; return; }
  if [ -d "$vars" ] && [ -z "$(ls "$vars" 2>/dev/null)" ] && [ -z "$NB_SYS" ]; then
    mount -t efivarfs efivarfs "$vars" 2> "$NB_RUN/efivarfs.err" ||
      log "efivarfs: $(oneline "$(cat "$NB_RUN/efivarfs.err")")" >&2
  fi
  [ -n "$(ls "$vars" 2>/dev/null)" ] || { printf 'null'; return; }
  f=$vars/SecureBoot-$EFI_GLOBAL
  [ -e "$f" ] || { printf 'false'; return; }
  # efivarfs files cannot seek (no od -j): read attributes + data, take byte 5
  # shellcheck disable=SC2046
  set -- $(od -An -tu1 -N 5 "$f" 2>/dev/null)
  case "$5" in 1) printf 'true' ;; 0) printf 'false' ;; *) printf 'null' ;; esac
}

inventory_json() {
  cpu=$(inv_cpu)
  memory=$(inv_memory)   # sets mem_source in a subshell: read it again below
  inv_memory > /dev/null
  if [ -d "$SYS/firmware/efi" ]; then fw=uefi; else fw=bios; fi
  printf '{"schema":1,"cpu":%s,"memory":%s,"disks":%s,"nics":%s,"dmi":%s,' \
    "$cpu" "$memory" "$(inv_disks)" "$(inv_nics)" "$(inv_dmi)"
  printf '"firmware":"%s","secure_boot":%s,' "$fw" "$(secure_boot)"
  printf '"extra":{"agent":"netbootd-agent/2","kernel":%s,"memory_source":%s}}\n' \
    "$(jstr "$(uname -r | tr -cd '\040-\176')")" "$(jstr "$mem_source")"
}

# netbootd agent: disk capture (busybox sh), sourced by actions.sh.
# docs/agent-protocol.md "capture"; the server side is netbootd/net/capture.py.
#
#   act_capture ID FLAT   the action {"job", "disk", "bytes", "chunk", "volume"} (and
#     "tools", "tools_sha256" when the daemon serves a tool pack): report started;
#     choose the sha256 (cap_hasher); GET /api/v1/agent/capture/JOB (the committed offset);
#     each chunk read with dd into $NB_RUN (tmpfs) and hashed (sha256sum), its sha256
#     appended to a list; the next chunk is read and hashed while this one is on the wire.
#     http: ONE request per attempt, POST /api/v1/agent/capture/JOB/stream/OFFSET
#     (lib.sh's api_stream), its body every chunk still to send, each after its sha256
#     line.  https (and NB_CAPTURE_STREAM=0): one POST per chunk (lib.sh's api_file) to
#     /api/v1/agent/capture/JOB/OFFSET?sha256=HEX.  A refused or lost stream or chunk:
#     ask the server for the committed offset again and continue from there (at most
#     CAPTURE_TRIES times in a row without progress).  At the end: report done
#     with sha256 of the chunk list (what was read), or failed with the reason.

CAPTURE_TRIES=${NB_CAPTURE_TRIES:-8}
CAPTURE_PAUSE=${NB_CAPTURE_PAUSE:-2}

# cap_sha FILE: its sha256 (64 hex digits and a newline).  openssl's when cap_hasher
# chose it (SHA-NI where the CPU has it: ~0.8 s CPU per GB here, process included),
# else busybox's sha256sum (no SHA-NI: ~4.4 s CPU per GB, the agent's largest cost per
# byte; bench/storage/README.md).
cap_sha() {
  if [ "$cap_hash" = openssl ]; then
    LD_LIBRARY_PATH=$NB_LIBS openssl dgst -sha256 -r "$1"
  else
    sha256sum "$1"
  fi | cut -c 1-64
}

# cap_hasher FLAT: set cap_hash (openssl or busybox) and cap_why (how it was chosen).
# An openssl on PATH that hashes a known input wins (the boot media's initrd carries
# one).  Else the action's tool pack ({"tools": URL path, "tools_sha256": HEX},
# iso_builder/hashtool.py): fetched (nb_fetch: busybox wget, or the pinned curl) into
# $NB_RUN (a tmpfs), its sha256 checked with busybox sha256sum before anything in it
# runs, unpacked into $NB_RUN/tools, its bin/ put first on PATH (bin/openssl runs the
# binary by the pack's own interpreter and libraries), tried on a known input.  Any
# failure: a marker saying why, and busybox sha256sum - the capture goes on.
# NB_CAPTURE_HASH=busybox forces busybox (benchmarks).
CAP_ABC=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad   # sha256("abc")
cap_openssl_ok() {
  command -v openssl > /dev/null &&
    [ "$(printf abc | LD_LIBRARY_PATH=$NB_LIBS openssl dgst -sha256 -r 2>/dev/null |
         cut -c 1-64)" = "$CAP_ABC" ]
}
cap_hasher() {
  cap_hash=busybox cap_why=""
  if [ "${NB_CAPTURE_HASH:-auto}" = busybox ]; then cap_why="NB_CAPTURE_HASH=busybox"; return; fi
  if cap_openssl_ok; then cap_hash=openssl cap_why="on PATH"; return; fi
  _tp=$(jget "$1" tools) _ts=$(jget "$1" tools_sha256)
  if [ -z "$_tp" ]; then cap_why="no openssl and no tool pack"; return; fi
  case "$_tp" in
    /*[!A-Za-z0-9._/-]*|*..*|[!/]*) cap_tools_fail "not a path: $_tp"; return ;;
  esac
  case "$_ts" in
    *[!0-9a-f]*|'') cap_tools_fail "not a sha256: $_ts"; return ;;
  esac
  [ "${#_ts}" = 64 ] || { cap_tools_fail "not a sha256: $_ts"; return; }
  rm -rf "$NB_RUN/tools" "$NB_RUN/tools.pack"
  if ! nb_fetch "$server$_tp" "$NB_RUN/tools.pack"; then
    cap_tools_fail "download of $_tp failed: $(cat "$NB_RUN/wget.err" 2>/dev/null)"; return
  fi
  _got=$(sha256sum "$NB_RUN/tools.pack" | cut -c 1-64)
  if [ "$_got" != "$_ts" ]; then
    cap_tools_fail "$_tp has sha256 $_got, the action says $_ts"; return
  fi
  if ! mkdir -m 0700 "$NB_RUN/tools" ||
     ! (cd "$NB_RUN/tools" && gzip -dc "$NB_RUN/tools.pack" | cpio -id 2> /dev/null) ||
     [ ! -x "$NB_RUN/tools/bin/openssl" ]; then
    cap_tools_fail "cannot unpack $_tp"; return
  fi
  rm -f "$NB_RUN/tools.pack"
  PATH="$NB_RUN/tools/bin:$PATH"
  if ! cap_openssl_ok; then
    PATH=${PATH#"$NB_RUN/tools/bin:"}
    cap_tools_fail "openssl from $_tp does not hash"; return
  fi
  cap_hash=openssl cap_why="tool pack $_tp"
}

cap_tools_fail() {  # cap_tools_fail WHY: busybox it is
  rm -rf "$NB_RUN/tools" "$NB_RUN/tools.pack"
  cap_hash=busybox cap_why="tool pack not used: $(oneline "$1")"
  marker "capture: $cap_why; hashing with busybox sha256sum"
}

# cap_read OFFSET FILE: the chunk at OFFSET into FILE, its sha256 into FILE.sha
# (empty when the read failed or came back short).
cap_read() {
  _n=$(( cap_total - $1 ))
  [ "$_n" -gt "$cap_chunk" ] && _n=$cap_chunk
  rm -f "$2" "$2.sha"
  if dd if="$cap_dev" of="$2" bs=$MiB skip=$(( $1 / MiB )) count=$(( (_n + MiB - 1) / MiB )) \
       2> "$2.err" && [ "$(stat -c %s "$2")" = "$_n" ]; then
    cap_sha "$2" > "$2.sha"
  else
    : > "$2.sha"
  fi
}

# cap_committed: GET the server's committed offset into cap_off (0: failed).
cap_committed() {
  api GET "/api/v1/agent/capture/$cap_job"
  case "$http_status" in
    2??) _c=$(jget "$NB_RUN/http.flat" committed)
         case "$_c" in ''|*[!0-9]*) return 1 ;; esac
         cap_off=$_c; return 0 ;;
  esac
  return 1
}

# cap_hashes_to OFFSET: the list holds exactly the chunks before OFFSET (drops
# later lines; reads and hashes missing earlier chunks without sending them).
cap_hashes_to() {
  _want=$(( ($1 + cap_chunk - 1) / cap_chunk ))     # the last chunk may be short
  _have=$(wc -l < "$NB_RUN/cap.hashes" | tr -cd '0-9')
  if [ "$_have" -gt "$_want" ]; then
    head -n "$_want" "$NB_RUN/cap.hashes" > "$NB_RUN/cap.hashes.new"
    mv "$NB_RUN/cap.hashes.new" "$NB_RUN/cap.hashes"
  fi
  while [ "$_have" -lt "$_want" ]; do
    cap_read $(( _have * cap_chunk )) "$NB_RUN/cap.h"
    [ -s "$NB_RUN/cap.h.sha" ] || return 1
    cat "$NB_RUN/cap.h.sha" >> "$NB_RUN/cap.hashes"
    _have=$(( _have + 1 ))
  done
  rm -f "$NB_RUN/cap.h" "$NB_RUN/cap.h.sha" "$NB_RUN/cap.h.err"
}

cap_fail() {  # cap_fail ID REASON
  marker "FAILED capture id=$(oneline "$1") disk=$(oneline "$cap_disk"): $(oneline "$2")"
  rm -f "$NB_RUN"/cap.a* "$NB_RUN"/cap.b* "$NB_RUN/cap.hashes" "$NB_RUN/cap.fail"
  report "$1" capture failed "{\"error\":$(jstr "$2"),\"committed\":$(jnum "$cap_off")}"
}

# cap_again ID WHAT: a chunk or stream refused or lost: counted (a marker); a final
# refusal or CAPTURE_TRIES in a row without progress fail the capture (1), else after
# CAPTURE_PAUSE the caller asks for the committed offset.
cap_again() {
  tries=$((tries + 1))
  marker "capture $2 $cap_off: status=$http_status $(oneline "$http_error") (try $tries)"
  case "$http_status" in
    400|401|404|413) cap_fail "$1" "$2 $cap_off refused: $http_error"; return 1 ;;
  esac
  if [ "$tries" -ge "$CAPTURE_TRIES" ]; then
    cap_fail "$1" "$2 $cap_off: $http_error"; return 1
  fi
  sleep "$CAPTURE_PAUSE"
}

# cap_by_chunk ID: the rest of the disk, one POST per chunk (https: curl per chunk).
cap_by_chunk() {
  cur=a nxt=b rp=""
  [ "$cap_off" -lt "$cap_total" ] && cap_read "$cap_off" "$NB_RUN/cap.$cur"
  tries=0
  while [ "$cap_off" -lt "$cap_total" ]; do
    if [ ! -s "$NB_RUN/cap.$cur.sha" ]; then
      [ -n "$rp" ] && wait "$rp"
      cap_fail "$1" "read of $cap_dev at $cap_off failed: $(oneline "$(cat "$NB_RUN/cap.$cur.err" 2>/dev/null)")"
      return 1
    fi
    ahead=$(( cap_off + cap_chunk ))
    rp=""
    if [ "$ahead" -lt "$cap_total" ]; then
      cap_read "$ahead" "$NB_RUN/cap.$nxt" &
      rp=$!
    fi
    read -r sha < "$NB_RUN/cap.$cur.sha"
    # lib.sh's api_file: the chunk streamed to nc (http), the pinned curl (https)
    _n=$(( cap_total - cap_off ))
    [ "$_n" -gt "$cap_chunk" ] && _n=$cap_chunk
    api_file POST "/api/v1/agent/capture/$cap_job/$cap_off?sha256=$sha" "$NB_RUN/cap.$cur" "$_n"
    [ -n "$rp" ] && wait "$rp"
    if [ "$http_status" = 200 ]; then
      echo "$sha" >> "$NB_RUN/cap.hashes"
      cap_off=$(( cap_off + cap_chunk ))
      [ "$cap_off" -gt "$cap_total" ] && cap_off=$cap_total
      _t=$cur cur=$nxt nxt=$_t
      tries=0
      continue
    fi
    # refused or lost: where does the server stand?
    was=$cap_off
    cap_again "$1" "chunk at" || return 1
    cap_committed || continue          # keep cap_off; try the same chunk again
    if [ "$cap_off" != "$was" ]; then
      cap_hashes_to "$cap_off" || { cap_fail "$1" "read of $cap_dev failed"; return 1; }
      [ "$cap_off" -lt "$cap_total" ] && cap_read "$cap_off" "$NB_RUN/cap.$cur"
    fi
  done
}

# cap_frames FROM: a stream's body from FROM (that chunk read into cap.a) to the end:
# per chunk its sha256 line and its bytes; the next chunk is read and hashed meanwhile.
# Runs in api_stream's subshell: 0 all written, 1 a write failed (the connection went),
# 2 a read failed ("OFFSET: error" in cap.fail).
cap_frames() {
  _o=$1 _c=a _x=b
  while [ "$_o" -lt "$cap_total" ]; do
    if [ ! -s "$NB_RUN/cap.$_c.sha" ]; then
      echo "$_o: $(cat "$NB_RUN/cap.$_c.err" 2>/dev/null)" > "$NB_RUN/cap.fail"
      return 2
    fi
    _a=$(( _o + cap_chunk )) _rp=""
    if [ "$_a" -lt "$cap_total" ]; then
      cap_read "$_a" "$NB_RUN/cap.$_x" > /dev/null &
      _rp=$!
    fi
    cat "$NB_RUN/cap.$_c.sha" "$NB_RUN/cap.$_c" || { [ -z "$_rp" ] || wait "$_rp"; return 1; }
    cat "$NB_RUN/cap.$_c.sha" >> "$NB_RUN/cap.hashes"
    [ -z "$_rp" ] || wait "$_rp"
    _o=$_a _t=$_c _c=$_x _x=$_t
  done
}

# cap_by_stream ID: the rest of the disk over one connection per attempt.
cap_by_stream() {
  tries=0
  while [ "$cap_off" -lt "$cap_total" ]; do
    cap_read "$cap_off" "$NB_RUN/cap.a"
    _left=$(( cap_total - cap_off ))
    was=$cap_off
    rm -f "$NB_RUN/cap.fail"
    api_stream POST "/api/v1/agent/capture/$cap_job/stream/$cap_off" \
      $(( _left + 65 * ((_left + cap_chunk - 1) / cap_chunk) )) cap_frames "$cap_off"
    if [ "$api_rc" = 2 ]; then
      cap_fail "$1" "read of $cap_dev at $(oneline "$(cat "$NB_RUN/cap.fail")") failed"
      return 1
    fi
    if [ "$http_status" = 200 ]; then
      _c=$(jget "$NB_RUN/http.flat" committed)
      case "$_c" in ''|*[!0-9]*) ;; *) cap_off=$_c ;; esac
      [ "$cap_off" -gt "$was" ] && tries=0
    else
      cap_again "$1" "stream from" || return 1
      cap_committed || continue        # keep cap_off; try the same stream again
      _r=$(jget "$NB_RUN/http.flat" refused)
      [ -n "$_r" ] && marker "capture: the server stopped the stream: $(oneline "$_r")"
      [ "$cap_off" -gt "$was" ] && tries=0
    fi
    cap_hashes_to "$cap_off" || { cap_fail "$1" "read of $cap_dev failed"; return 1; }
  done
}

act_capture() {
  id=$1
  cap_job=$(jget "$2" job) cap_disk=$(jget "$2" disk)
  cap_total=$(jget "$2" bytes) cap_chunk=$(jget "$2" chunk)
  cap_off=0
  case "$cap_job" in ''|*[!0-9a-f]*) cap_fail "$id" "no job in the action"; return ;; esac
  case "$cap_disk" in ''|*[!A-Za-z0-9_-]*) cap_fail "$id" "not a disk name"; return ;; esac
  case "$cap_total$cap_chunk" in *[!0-9]*) cap_fail "$id" "bad bytes/chunk"; return ;; esac
  if [ -z "$cap_total" ] || [ -z "$cap_chunk" ] || [ "$cap_chunk" -lt $MiB ] ||
     [ $(( cap_chunk % MiB )) != 0 ]; then
    cap_fail "$id" "bad bytes/chunk"; return
  fi
  cap_dev=${NB_CAPTURE_DEV:-/dev/$cap_disk}
  _size=$(( $(number "$(rd "$SYS/block/$cap_disk/size")" 0) * 512 ))
  if [ ! -b "$cap_dev" ] && [ -z "$NB_CAPTURE_DEV" ]; then
    cap_fail "$id" "no such disk"; return
  fi
  if [ "$_size" != "$cap_total" ]; then
    cap_fail "$id" "size $_size is not the $cap_total bytes of the inventory: not the disk the admin chose"
    return
  fi
  report "$id" capture started
  cap_hasher "$2"
  : > "$NB_RUN/cap.hashes"
  tries=0
  t0=$(now)
  until cap_committed; do
    tries=$((tries + 1))
    [ "$tries" -ge "$CAPTURE_TRIES" ] && { cap_fail "$id" "no committed offset: $http_error"; return; }
    sleep "$CAPTURE_PAUSE"
  done
  marker "capture id=$(oneline "$id") disk=$cap_disk bytes=$cap_total chunk=$cap_chunk from=$cap_off hasher=$cap_hash ($cap_why)"
  cap_hashes_to "$cap_off" || { cap_fail "$id" "read of $cap_dev failed"; return; }
  case "$server:${NB_CAPTURE_STREAM:-1}" in
    http://*:1) cap_by_stream "$id" || return ;;
    *) cap_by_chunk "$id" || return ;;
  esac
  rm -f "$NB_RUN"/cap.a* "$NB_RUN"/cap.b* "$NB_RUN/cap.fail"
  digest=$(sha256sum "$NB_RUN/cap.hashes" | cut -c 1-64)
  chunks=$(wc -l < "$NB_RUN/cap.hashes" | tr -cd '0-9')
  rm -f "$NB_RUN/cap.hashes"
  secs=$(( $(now) - t0 ))
  marker "capture id=$(oneline "$id") disk=$cap_disk bytes=$cap_total sha256=$digest seconds=$secs"
  tries=0
  while :; do       # the last word matters: the server ends the job on it
    report "$id" capture done "{\"sha256\":\"$digest\",\"bytes\":$cap_total,\"chunks\":$(jnum "$chunks"),\"seconds\":$(jnum "$secs")}"
    case "$http_status" in 2??|4??) break ;; esac
    tries=$((tries + 1))
    [ "$tries" -ge "$CAPTURE_TRIES" ] && break
    sleep "$CAPTURE_PAUSE"
  done
}

# netbootd agent: shared helpers (busybox sh), sourced by init, inventory.sh
# and actions.sh.  Everything from outside (command line, DHCP, HTTP replies,
# sysfs strings) is data: always quoted, never eval'ed, escaped before it goes
# into JSON, cut to one printable line before it goes to the console.
#
# Overridable for tests on a build machine: NB_SYS (/sys), NB_PROC (/proc),
# NB_LIB (where json.awk is), NB_RUN (private scratch dir, mode 0700), NB_LIBS
# (the packed binaries' shared libraries), NB_RESOLV (/etc/resolv.conf).

SYS=${NB_SYS:-/sys}
PROC=${NB_PROC:-/proc}
NB_LIB=${NB_LIB:-/lib/netbootd}
NB_RUN=${NB_RUN:-/run/netbootd}
NB_LIBS=${NB_LIBS:-/usr/lib/netbootd}
NB_RESOLV=${NB_RESOLV:-/etc/resolv.conf}
# HTTPS (init sets them from netbootd.pin= / netbootd.insecure=1): every https
# call checks the server's public key against tls_pin before it sends anything.
tls_pin=""
tls_insecure=0
MiB=1048576

log() { echo "netbootd-init: $*"; }
marker() { echo "NETBOOTD-AGENT: $*"; }

# Seconds since boot (the RTC may be anything; uptime only moves forward).
now() {
  read -r up _ < "$PROC/uptime"
  echo "${up%%.*}"
}

# JSON string body: drop control characters, escape backslash and quote.
json() {
  printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

# A JSON string, or null when empty.
jstr() {
  if [ -n "$1" ]; then printf '"%s"' "$(json "$1")"; else printf 'null'; fi
}

# A JSON number (non-negative integer, no leading zeros), or null.
jnum() {
  case "$1" in
    ''|*[!0-9]*) printf 'null' ;;
    *) printf '%s' "$1" | sed 's/^0*\([0-9]\)/\1/' ;;
  esac
}

# true / false / null from 1 / 0 / anything else.
jbool() {
  case "$1" in 1) printf 'true' ;; 0) printf 'false' ;; *) printf 'null' ;; esac
}

# One line of printable text, at most 200 bytes (for console messages).
oneline() {
  printf '%s' "$1" | tr '\n\r\t' '   ' | tr -cd '\040-\176' | head -c 200
}

# Non-negative integer or the default.
number() {
  case "$1" in
    ''|*[!0-9]*) echo "$2" ;;
    *) echo "$1" ;;
  esac
}

# rd FILE: its first line, printable ASCII, trimmed, at most 256 characters
# (netbootd's limit for inventory strings); empty when unreadable.
rd() {
  _v=""
  [ -r "$1" ] && read -r _v < "$1" 2>/dev/null
  printf '%s' "$_v" | tr -cd '\040-\176' | sed -e 's/^ *//' -e 's/ *$//' | cut -c 1-256
}

# A random integer 0..65535 (jitter), from the kernel's CSPRNG.
rand16() {
  _r=$(od -An -N2 -tu2 /dev/urandom 2>/dev/null | tr -cd '0-9')
  echo "${_r:-0}"
}

# --- values from the medium (data: checked, never eval'ed) ---------------------------
# ipv4 X: X is a dotted quad of 0..255 (no leading zeros, which some tools read as octal).
ipv4() {
  case "$1" in
    *[!0-9.]*|.*|*.|*..*) return 1 ;;
  esac
  _o=0
  _rest=$1.
  while [ -n "$_rest" ]; do
    _p=${_rest%%.*}
    _rest=${_rest#*.}
    _o=$((_o + 1))
    case "$_p" in
      [0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5]) ;;
      *) return 1 ;;
    esac
  done
  [ "$_o" = 4 ]
}

# ip2int A.B.C.D -> the address as one integer (callers checked it with ipv4).
ip2int() {
  _a=${1%%.*} _r=${1#*.}
  _b=${_r%%.*} _r=${_r#*.}
  _c=${_r%%.*} _d=${_r#*.}
  echo $(( (_a << 24) + (_b << 16) + (_c << 8) + _d ))
}

# cidr X: X is A.B.C.D/N with N in 1..32.
cidr() {
  case "$1" in */*) ;; *) return 1 ;; esac
  ipv4 "${1%/*}" || return 1
  case "${1#*/}" in
    [1-9]|[12][0-9]|3[0-2]) return 0 ;;
  esac
  return 1
}

# ifname X: a Linux interface name (1..15 of A-Z a-z 0-9 _ . -, not . or ..).
ifname() {
  case "$1" in
    ''|.|..|*[!A-Za-z0-9_.-]*) return 1 ;;
  esac
  [ ${#1} -le 15 ]
}

# pins X: one or more curl public-key pins "sha256//<44 base64>" joined by ';'.
pins() {
  case "$1" in ''|*[!A-Za-z0-9+/=\;]*) return 1 ;; esac
  _rest=$1\;
  while [ -n "$_rest" ]; do
    _p=${_rest%%;*}
    _rest=${_rest#*;}
    case "$_p" in sha256//*) ;; *) return 1 ;; esac
    _b=${_p#sha256//}
    [ ${#_b} = 44 ] || return 1
    case "$_b" in *=) ;; *) return 1 ;; esac
  done
}

# static_check IP GW DNS IFACE: empty when the values make a usable static
# setup, else what is wrong (one line).  GW must be inside IP's subnet.
static_check() {
  cidr "$1" || { echo "netbootd.ip=$(oneline "$1") is not A.B.C.D/PREFIX"; return; }
  if [ -n "$2" ]; then
    ipv4 "$2" || { echo "netbootd.gw=$(oneline "$2") is not an IPv4 address"; return; }
    _bits=${1#*/}
    _mask=$(( (0xffffffff << (32 - _bits)) & 0xffffffff ))
    if [ $(( $(ip2int "${1%/*}") & _mask )) != $(( $(ip2int "$2") & _mask )) ]; then
      echo "netbootd.gw=$2 is outside $1"; return
    fi
  fi
  _set=$(printf '%s' "$3" | tr ',' ' ')
  set -f
  for _n in $_set; do
    ipv4 "$_n" || { set +f; echo "netbootd.dns=$(oneline "$3") is not a list of IPv4 addresses"; return; }
  done
  set +f
  if [ -n "$4" ] && ! ifname "$4"; then
    echo "netbootd.iface=$(oneline "$4") is not an interface name"
  fi
}

# static_net IP GW DNS IFACE NICS...: configure one NIC without DHCP: IFACE if
# given (it must be one of NICS), else the first NIC with carrier (waiting up to
# 5 s for one), else the first.  Sets $leased to that NIC and writes its facts
# where udhcpc.script would ($NB_RUN/lease/NIC/ip).  Returns 1 (with a marker)
# when the NIC or the address cannot be set up.
static_net() {
  _ip=$1 _gw=$2 _dns=$3 _if=$4
  shift 4
  leased=""
  if [ -n "$_if" ]; then
    for _n in "$@"; do [ "$_n" = "$_if" ] && leased=$_n; done
    if [ -z "$leased" ]; then
      marker "FAILED static IP: netbootd.iface=$_if is not a NIC here (NICs: $*)"
      return 1
    fi
  else
    for _n in "$@"; do ip link set dev "$_n" up 2>/dev/null; done
    _i=0
    while [ -z "$leased" ] && [ $_i -lt 50 ]; do
      for _n in "$@"; do
        _c=""
        read -r _c < "$SYS/class/net/$_n/carrier" 2>/dev/null
        if [ "$_c" = 1 ]; then leased=$_n; break; fi
      done
      [ -n "$leased" ] || usleep 100000
      _i=$((_i + 1))
    done
    [ -n "$leased" ] || leased=$1
  fi
  if [ -z "$leased" ]; then
    marker "FAILED static IP: no NIC"
    return 1
  fi
  log "static $_ip on $leased${_gw:+ via $_gw}"
  ip link set dev "$leased" up
  ip -4 addr flush dev "$leased" 2>/dev/null
  if ! ip addr add "$_ip" dev "$leased" 2> "$NB_RUN/ip.err"; then
    marker "FAILED static IP $_ip on $leased: $(oneline "$(cat "$NB_RUN/ip.err")")"
    return 1
  fi
  if [ -n "$_gw" ] && ! ip route replace default via "$_gw" dev "$leased" 2> "$NB_RUN/ip.err"; then
    marker "FAILED static IP: default route via $_gw: $(oneline "$(cat "$NB_RUN/ip.err")")"
    return 1
  fi
  if [ -n "$_dns" ]; then
    set -f
    for _n in $(printf '%s' "$_dns" | tr ',' ' '); do printf 'nameserver %s\n' "$_n"; done \
      > "$NB_RESOLV"
    set +f
  fi
  mkdir -p "$NB_RUN/lease/$leased"
  printf '%s\n' "${_ip%/*}" > "$NB_RUN/lease/$leased/ip"
  printf '%s\n' "${_ip#*/}" > "$NB_RUN/lease/$leased/mask"
  printf '%s\n' "$_gw" > "$NB_RUN/lease/$leased/router"
  printf '%s\n' "$_dns" > "$NB_RUN/lease/$leased/dns"
  printf 'static\n' > "$NB_RUN/lease/$leased/lease"
  return 0
}

# --- JSON replies -----------------------------------------------------------------
# jflat IN OUT: flatten a JSON document into "path<TAB>value" lines (json.awk).
jflat() {
  awk -f "$NB_LIB/json.awk" < "$1" > "$2" 2>/dev/null
}

# jget FLAT KEY: the value at KEY ("poll.interval", "disks.0"), empty if absent.
jget() {
  awk -F '\t' -v k="$2" '$1 == k { print substr($0, length(k) + 2); exit }' "$1"
}

# jlist FLAT KEY: the values KEY.0, KEY.1, ... one per line, in order.
jlist() {
  awk -F '\t' -v k="$2" 'index($1, k ".") == 1 && substr($1, length(k) + 2) ~ /^[0-9]+$/ {
    print substr($0, index($0, "\t") + 1) }' "$1"
}

# --- HTTP -------------------------------------------------------------------------
# api METHOD PATH [BODYFILE]: call $server (http://host[:port][/prefix]).
# Sets http_status (0: no answer) and http_error (the reply's "error" or what
# went wrong); the body is in $NB_RUN/http.body, flattened in $NB_RUN/http.flat.
# Plain http goes through nc so that 4xx bodies (the refusal's reason) are
# kept; busybox wget drops them.  $secret, when set, is sent as
# "Authorization: Agent ..." (the request file is 0600 and removed after).
api() {
  _m=$1 _p=$2 _b=$3
  http_status=0 http_error=""
  rm -f "$NB_RUN/http.body" "$NB_RUN/http.flat" "$NB_RUN/http.resp"
  : > "$NB_RUN/http.body"
  case "$server" in
    http://*) ;;
    https://*) _api_https "$@"; return ;;
    *) http_error="unsupported server URL"; return ;;
  esac
  _hp=${server#http://}
  _prefix=""
  case "$_hp" in */*) _prefix=/${_hp#*/}; _hp=${_hp%%/*} ;; esac
  _prefix=${_prefix%/}
  case "$_hp" in
    *:*) _host=${_hp%:*} _port=${_hp##*:} ;;
    *) _host=$_hp _port=80 ;;
  esac
  _api_req
  # nc half-closes the connection when its stdin ends, and an HTTP server may
  # take that for a client gone away (Twisted drops the request unanswered):
  # nc's stdin is a FIFO it also holds open for writing (fifo_open), so it never
  # ends; nc exits when the server closes the connection after its answer
  # (HTTP/1.0, Connection: close).
  fifo_open || { http_error="cannot open $NB_RUN/http.fifo"; rm -f "$NB_RUN/http.req"; return; }
  timeout 30 nc -w 10 "$_host" "$_port" <&4 3>&- 4<&- > "$NB_RUN/http.resp" 2>/dev/null &
  _nc=$!
  exec 4<&-
  (cat "$NB_RUN/http.req" >&3) 2>/dev/null   # a subshell: if nc is gone, only it sees EPIPE
  exec 3>&-
  wait "$_nc"
  rm -f "$NB_RUN/http.req"
  http_reply "$_hp"
}

# _api_req: the request of api ($_m $_prefix$_p to $_hp, body $_b, $secret) in
# $NB_RUN/http.req, 0600, written by the shell's printf: the secret is never on a
# command line (other processes can read /proc/PID/cmdline).
_api_req() {
  (
    umask 077
    {
      printf '%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: netbootd-agent/2\r\n' \
        "$_m" "$_prefix$_p" "$_hp"
      [ -n "$secret" ] && printf 'Authorization: Agent %s\r\n' "$secret"
      if [ -n "$_b" ]; then
        printf 'Content-Type: application/json\r\nContent-Length: %s\r\n' \
          "$(stat -c %s "$_b")"
      fi
      printf 'Connection: close\r\n\r\n'
      [ -n "$_b" ] && cat "$_b"
    } > "$NB_RUN/http.req"
  )
}

# fifo_open: a pipe for nc's stdin that never ends, without a blocking open.  fd 4 =
# $NB_RUN/http.fifo opened read-write (on Linux that never waits for a partner), fd 3 =
# its write end (does not wait either: fd 4 is a reader).  The caller starts nc with
# `<&4 3>&- 4<&-` (its stdin read-write: nc itself holds a write end, so it never
# reads EOF), closes fd 4 (then nc is the only reader: if nc is gone, a write on fd 3
# fails with EPIPE instead of waiting on a full pipe; nc's `timeout` watcher gets
# /dev/null as stdin, so it holds no end of the FIFO), writes the request on fd 3 and
# closes it.  The FIFO's name is removed at once: the open ends are all that is used.
# Replaces a blocking `exec 3> FIFO` that waited for nc's side to open: a SIGCHLD
# meanwhile (busybox ash catches it without SA_RESTART) failed that open with EINTR.
# The agent is PID 1 in the initrd, so it is the parent of every orphan - among them
# each earlier call's `timeout` watcher, which exits up to 1 s after its nc - and gets
# SIGCHLDs nobody planned for.  The old retry loop
# (`until command exec 3> FIFO; do ...; [ $n -ge 20 ] && return 1; done`) then
# succeeded on the second open but returned the loop's status, 1 (the last `[`):
# one EINTR was enough for "cannot open http.fifo".  Measured with this busybox on
# the build host (strace: openat(...http.fifo, O_WRONLY...) = ? ERESTARTSYS, then
# openat = 3, then kill(nc)): 10 of 1,000 api calls failed with the shell as PID 1 of
# a PID namespace (42 with both cores kept busy), 2 of 1,000 with background jobs
# ending, 59 of 300 with a SIGCHLD sent every 0.2 ms; none with this open
# (tests/net/test_agent_fifo.py).
fifo_open() {
  rm -f "$NB_RUN/http.fifo"
  { mkfifo -m 0600 "$NB_RUN/http.fifo" &&
      command exec 4<> "$NB_RUN/http.fifo" 3> "$NB_RUN/http.fifo"; } 2>/dev/null
  _fo=$?
  rm -f "$NB_RUN/http.fifo"
  [ "$_fo" = 0 ] || exec 3>&- 4<&-
  return "$_fo"
}

# tls_mode: how https goes: "pin" (curl checks tls_pin), "insecure" (no check:
# netbootd.insecure=1 and no pin), or "refuse" (https without a pin, or a pin
# without curl in this initrd: nothing may be sent).
tls_mode() {
  if [ -n "$tls_pin" ]; then
    if command -v curl > /dev/null; then echo pin; else echo refuse; fi
  elif [ "$tls_insecure" = 1 ]; then
    echo insecure
  else
    echo refuse
  fi
}

# https: curl with the pin (-k: the pin is the trust, not a CA; curl compares
# it in the handshake, before the request leaves).  A mismatch (curl exit 90)
# is printed as "FAILED tls pin mismatch" and sets http_error "tls pin mismatch".
_api_https() {
  case "$(tls_mode)" in
    refuse)
      if [ -n "$tls_pin" ]; then
        http_error="https needs curl (the TLS client), which this initrd lacks"
      else
        http_error="https without netbootd.pin (netbootd.insecure=1 allows it)"
      fi
      return ;;
    insecure)
      command -v curl > /dev/null || { _api_ssl_client; return; }
      set -- -k ;;
    pin) set -- -k --pinnedpubkey "$tls_pin" ;;
  esac
  set -- "$@" -sS --proto =https --connect-timeout 10 --max-time 30 -X "$_m" \
    -o "$NB_RUN/http.body" -w '%{http_code}' -H "User-Agent: netbootd-agent/2"
  if [ -n "$secret" ]; then
    # from a 0600 file, not the command line (other processes can read argv)
    (umask 077; printf 'Authorization: Agent %s\n' "$secret" > "$NB_RUN/http.hdr")
    set -- "$@" -H "@$NB_RUN/http.hdr"
  fi
  if [ -n "$_b" ]; then
    set -- "$@" -H 'Content-Type: application/json' --data-binary "@$_b"
  fi
  _code=$(LD_LIBRARY_PATH=$NB_LIBS timeout 40 curl "$@" "$server$_p" 2> "$NB_RUN/http.err")
  _rc=$?
  rm -f "$NB_RUN/http.hdr"
  case "$_rc:$_code" in
    0:[1-5][0-9][0-9]) http_status=$_code ;;
    90:*)
      http_error="tls pin mismatch"
      marker "FAILED tls pin mismatch server=$(oneline "$server") pin=$(oneline "$tls_pin"): nothing sent"
      return ;;
    *)
      http_error="curl exit $_rc: $(oneline "$(cat "$NB_RUN/http.err" 2>/dev/null)")"
      return ;;
  esac
  jflat "$NB_RUN/http.body" "$NB_RUN/http.flat" || : > "$NB_RUN/http.flat"
  case "$http_status" in
    2??) ;;
    *) http_error=$(jget "$NB_RUN/http.flat" error)
       [ -n "$http_error" ] || http_error="HTTP $http_status" ;;
  esac
}

# nb_fetch URL FILE: download a file (a boot action's kernel/initrd).  https goes
# through curl with the pin, as the API does; no https download without a pin
# (unless netbootd.insecure=1).  Errors in $NB_RUN/wget.err.
nb_fetch() {
  case "$1" in
    https://*)
      case "$(tls_mode)" in
        refuse) echo "https download without a pinned TLS client refused" > "$NB_RUN/wget.err"
                return 1 ;;
        pin) set -- "$1" "$2" -k --pinnedpubkey "$tls_pin" ;;
        insecure)
          command -v curl > /dev/null ||
            { timeout 600 wget -q -O "$2" "$1" 2> "$NB_RUN/wget.err"; return; }
          set -- "$1" "$2" -k ;;
      esac
      _u=$1 _f=$2
      shift 2
      LD_LIBRARY_PATH=$NB_LIBS timeout 600 curl -sS -f --proto =https --connect-timeout 10 \
        "$@" -o "$_f" "$_u" 2> "$NB_RUN/wget.err" ;;
    *) timeout 600 wget -q -O "$2" "$1" 2> "$NB_RUN/wget.err" ;;
  esac
}

# https with netbootd.insecure=1 and no curl: busybox's own TLS (ssl_client, no
# certificate check) on the socket nc opens (nc -e runs it with the socket as stdin
# and stdout).  The request goes from the 0600 request file (_api_req), so the
# secret is never on a command line: busybox wget --header put it in
# /proc/PID/cmdline.  The answer is parsed as plain http's (a refusal's body kept).
# Busybox 1.35's TLS offers no signature algorithm OpenSSL 3 accepts at its default
# security level (alert 40 from netbootd's own listener): this path reaches only
# servers that accept it (docs/agent-protocol.md, "HTTPS").
_api_ssl_client() {
  if ! command -v ssl_client > /dev/null; then
    http_error="https without curl needs busybox ssl_client"
    return
  fi
  _hp=${server#https://} _prefix=""
  case "$_hp" in */*) _prefix=/${_hp#*/}; _hp=${_hp%%/*} ;; esac
  _prefix=${_prefix%/}
  case "$_hp" in
    *:*) _host=${_hp%:*} _port=${_hp##*:} ;;
    *) _host=$_hp _port=443 ;;
  esac
  _api_req
  timeout 30 nc -w 10 "$_host" "$_port" -e /bin/sh -c \
    'exec 3<&0 < "$1" > "$2"; exec ssl_client -s 3 -n "$3"' \
    sh "$NB_RUN/http.req" "$NB_RUN/http.resp" "$_host" 2> "$NB_RUN/http.err"
  rm -f "$NB_RUN/http.req"
  [ -s "$NB_RUN/http.resp" ] || {
    http_error="no https answer from $_hp: $(oneline "$(cat "$NB_RUN/http.err" 2>/dev/null)")"
    return
  }
  http_reply "$_hp"
}

# --- binary bodies (capture.sh) ------------------------------------------------------
# api_file METHOD PATH FILE LENGTH: api with FILE (LENGTH bytes, binary) as the body,
# streamed from the file into nc: no copy into a request file, and the length comes
# from the caller (busybox wc -c reads byte by byte: 0.8 s per 16 MiB here).  https
# goes through api (curl streams the file itself).  Same results as api.
api_file() {
  case "$server" in
    http://*) ;;
    *) api "$1" "$2" "$3"; return ;;
  esac
  _f=$3
  api_stream "$1" "$2" "$4" cat "$_f"
}

# api_stream METHOD PATH LENGTH CMD [ARG...]: one plain-http request whose body, LENGTH
# bytes, CMD writes to its stdout while the connection is open (one connection for a
# whole capture: capture.sh).  CMD runs in a subshell with SIGPIPE ignored: a dropped
# connection is a failed write there (CMD stops), never the end of the agent; its exit
# status is in api_rc.  nc's time limit grows with LENGTH (1 MB/s, the server's own
# floor).  Same results as api.
api_stream() {
  http_status=0 http_error="" api_rc=0
  rm -f "$NB_RUN/http.body" "$NB_RUN/http.flat" "$NB_RUN/http.resp" "$NB_RUN/http.fifo"
  : > "$NB_RUN/http.body"
  case "$server" in
    http://*) ;;
    *) http_error="a streamed body needs plain http"; return ;;
  esac
  _hp=${server#http://} _prefix=""
  case "$_hp" in */*) _prefix=/${_hp#*/}; _hp=${_hp%%/*} ;; esac
  _prefix=${_prefix%/}
  _host=${_hp%:*} _port=80
  case "$_hp" in *:*) _port=${_hp##*:} ;; esac
  _m=$1 _p=$2 _len=$3
  shift 3
  fifo_open || { http_error="cannot open $NB_RUN/http.fifo"; return; }   # see api
  timeout $(( 300 + _len / 1000000 )) nc "$_host" "$_port" <&4 3>&- 4<&- \
    > "$NB_RUN/http.resp" 2>/dev/null &
  _nc=$!
  exec 4<&-
  (
    trap '' PIPE
    printf '%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: netbootd-agent/2\r\n' \
      "$_m" "$_prefix$_p" "$_hp"
    [ -n "$secret" ] && printf 'Authorization: Agent %s\r\n' "$secret"
    printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n' "$_len"
    printf 'Connection: close\r\n\r\n' || exit 1
    "$@"
  ) >&3 2>/dev/null
  api_rc=$?
  exec 3>&-
  [ "$api_rc" = 0 ] || kill "$_nc" 2>/dev/null   # CMD gave up: the server sees the drop
  wait "$_nc"
  http_reply "$_hp"
}

# http_reply HOSTPORT: http_status, http_error, http.body and http.flat from the raw
# answer in $NB_RUN/http.resp (as api sets them).
http_reply() {
  # the status line by the shell's own read: no head|tr, printf|cut processes per call
  _sl=""
  { IFS= read -r _sl || :; } 2>/dev/null < "$NB_RUN/http.resp"
  case "$_sl" in
    HTTP/1.[01]\ [1-5][0-9][0-9]*) ;;
    *) http_error="no HTTP answer from $1"; rm -f "$NB_RUN/http.resp"; return ;;
  esac
  http_status=${_sl#* }
  http_status=${http_status%"${http_status#???}"}
  tr -d '\r' < "$NB_RUN/http.resp" | sed '1,/^$/d' > "$NB_RUN/http.body"
  rm -f "$NB_RUN/http.resp"
  jflat "$NB_RUN/http.body" "$NB_RUN/http.flat" || : > "$NB_RUN/http.flat"
  case "$http_status" in
    2??) ;;
    *) http_error=$(jget "$NB_RUN/http.flat" error)
       [ -n "$http_error" ] || http_error="HTTP $http_status" ;;
  esac
}

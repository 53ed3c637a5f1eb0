# netbootd agent: shared helpers (busybox sh), sourced by init, inventory.sh
# and actions.sh.  Everything from outside (command line, DHCP, HTTP replies,
# sysfs strings) is data: always quoted, never eval'ed, escaped before it goes
# into JSON, cut to one printable line before it goes to the console.
#
# Overridable for tests on a build machine: NB_SYS (/sys), NB_PROC (/proc),
# NB_LIB (where json.awk is), NB_RUN (private scratch dir, mode 0700).

SYS=${NB_SYS:-/sys}
PROC=${NB_PROC:-/proc}
NB_LIB=${NB_LIB:-/lib/netbootd}
NB_RUN=${NB_RUN:-/run/netbootd}
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
    https://*) _api_wget "$@"; return ;;
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
  (
    umask 077
    {
      printf '%s %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: netbootd-agent/2\r\n' \
        "$_m" "$_prefix$_p" "$_hp"
      [ -n "$secret" ] && printf 'Authorization: Agent %s\r\n' "$secret"
      if [ -n "$_b" ]; then
        printf 'Content-Type: application/json\r\nContent-Length: %s\r\n' \
          "$(wc -c < "$_b" | tr -cd '0-9')"
      fi
      printf 'Connection: close\r\n\r\n'
      [ -n "$_b" ] && cat "$_b"
    } > "$NB_RUN/http.req"
  )
  # nc half-closes the connection when its stdin ends, and an HTTP server may
  # take that for a client gone away (Twisted drops the request unanswered):
  # feed it through a FIFO whose write end stays open until nc exits (the
  # server closes the connection after its answer: HTTP/1.0, Connection: close).
  rm -f "$NB_RUN/http.fifo"
  mkfifo -m 0600 "$NB_RUN/http.fifo"
  timeout 30 nc -w 10 "$_host" "$_port" < "$NB_RUN/http.fifo" > "$NB_RUN/http.resp" 2>/dev/null &
  _nc=$!
  exec 3> "$NB_RUN/http.fifo"
  (cat "$NB_RUN/http.req" >&3) 2>/dev/null   # a subshell: if nc is gone, only it sees EPIPE
  wait "$_nc"
  exec 3>&-
  rm -f "$NB_RUN/http.req" "$NB_RUN/http.fifo"
  _status_line=$(head -n 1 "$NB_RUN/http.resp" | tr -d '\r')
  case "$_status_line" in
    HTTP/1.[01]\ [1-5][0-9][0-9]*) ;;
    *) http_error="no HTTP answer from $_hp"; return ;;
  esac
  http_status=$(printf '%s' "$_status_line" | cut -d ' ' -f 2)
  tr -d '\r' < "$NB_RUN/http.resp" | sed '1,/^$/d' > "$NB_RUN/http.body"
  rm -f "$NB_RUN/http.resp"
  jflat "$NB_RUN/http.body" "$NB_RUN/http.flat" || : > "$NB_RUN/http.flat"
  case "$http_status" in
    2??) ;;
    *) http_error=$(jget "$NB_RUN/http.flat" error)
       [ -n "$http_error" ] || http_error="HTTP $http_status" ;;
  esac
}

# https: busybox wget (its ssl_client); a refusal's body is lost, only the status line.
_api_wget() {
  set -- wget -q -O "$NB_RUN/http.body" --header "User-Agent: netbootd-agent/2"
  [ -n "$secret" ] && set -- "$@" --header "Authorization: Agent $secret"
  if [ -n "$_b" ]; then
    set -- "$@" --header 'Content-Type: application/json' --post-file "$_b"
  fi
  if timeout 30 "$@" "$server$_p" 2> "$NB_RUN/http.err"; then
    http_status=200
    jflat "$NB_RUN/http.body" "$NB_RUN/http.flat" || : > "$NB_RUN/http.flat"
  else
    http_error=$(oneline "$(cat "$NB_RUN/http.err" 2>/dev/null)")
    case "$http_error" in
      *"server returned error: HTTP/1."?" "[1-5][0-9][0-9]*)
        http_status=$(printf '%s' "${http_error#*HTTP/1.? }" | cut -c 1-3) ;;
    esac
    : > "$NB_RUN/http.flat"
  fi
}

#!/bin/sh
# udhcpc event script for the interop tests (runs only inside a lab netns).
# Appends one JSON-ish record per event to $UDHCPC_EVENTS: the event name and
# the variables udhcpc exported; on bound/renew it configures the address so
# that a later RELEASE (udhcpc -R) can be sent from it, as a real client would.
out="${UDHCPC_EVENTS:?UDHCPC_EVENTS not set}"
{
  echo "event=$1"
  for v in interface ip subnet mask broadcast router dns domain serverid lease siaddr \
           boot_file hostname opt53 message; do
    eval "val=\${$v-}"
    [ -n "$val" ] && echo "$v=$val"
  done
  echo "--"
} >> "$out"
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    ;;
  deconfig)
    ip addr flush dev "$interface"
    ;;
esac
exit 0

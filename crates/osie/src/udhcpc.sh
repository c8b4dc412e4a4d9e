#!/bin/sh
# udhcpc's event script in the Bellows in-memory OS: applies a lease
# (address, default route, DNS, host name). udhcpc sets interface, ip,
# mask (prefix length), router, dns, domain, hostname.
RUN=/run/bellows
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    prefix=${mask:-24}
    # Keep the address (and the connections using it) on a renewal.
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$prefix "; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/$prefix" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    fi
    if [ -n "$router" ]; then
      while ip route del default dev "$interface" 2>/dev/null; do :; done
      for r in $router; do
        ip route add default via "$r" dev "$interface" && break
      done
    fi
    if [ -n "$dns" ]; then
      {
        [ -n "$domain" ] && echo "search $domain"
        for s in $dns; do echo "nameserver $s"; done
      } >/etc/resolv.conf
    fi
    [ -n "$hostname" ] && hostname "$hostname"
    mkdir -p "$RUN"
    echo "$ip" >"$RUN/ip"
    ;;
esac
exit 0

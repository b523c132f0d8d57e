#!/bin/sh
# A three-namespace lab for tlsfault's redirect and tproxy routes (Linux, root).
#
#   scripts/lab-netns.sh [OPTIONS] up         make the lab (an existing one is replaced)
#   scripts/lab-netns.sh [OPTIONS] down       remove it (safe to repeat)
#   scripts/lab-netns.sh [OPTIONS] status     namespaces, addresses, routes, rules
#   scripts/lab-netns.sh [OPTIONS] exec NS CMD [ARG]...
#                                             run CMD in namespace NS: client, router,
#                                             server (or c, r, s, or the full name)
#   client tfc ── 10.200.1.0/24 ── tfr (router: tlsfault here) ── 10.200.2.0/24 ── tfs server
#     10.200.1.2       veth-c/veth-rc 10.200.1.1 | 10.200.2.1 veth-rs/veth-s       10.200.2.2
#     fd00:200:1::2 (--v6)             fd00:200:1::1 | fd00:200:2::1          fd00:200:2::2
# Options (before the command):
#   --mode redirect|tproxy|none   what tfr does to client TCP to --port (default redirect)
#   --port N          the intercepted destination port (default 443)
#   --proxy-port N    where tlsfault listens in tfr (default 8443)
#   --v6              IPv6 addresses, routes, forwarding and rules too
#   --backend iptables|legacy|nft
#                     iptables (the default: iptables/ip6tables, whatever backend they
#                     have here, else iptables-legacy), legacy (iptables-legacy), or
#                     nft (native nftables rules: table tlsfault_lab, inet with --v6)
#   --mark N          tproxy: the fwmark that sends packets to the local table (default 1)
#   --table N         tproxy: that routing table (default 100)
#   --suffix S        namespace names tfcS, tfrS, tfsS (default $LABNS_SUFFIX, else none),
#                     so parallel labs do not collide
# Everything is made inside the three namespaces (veth ends are created in them, the
# rules and forwarding live in tfr): the host's own interfaces, addresses, routes and
# tables are never touched.  `down` deletes the namespaces and so all they held; it
# first stops (SIGTERM, then SIGKILL) the processes still running in them.
set -eu

usage() { sed -n '2,30s/^# \{0,1\}//p' "$0" >&2; exit 2; }
die() { echo "lab-netns.sh: $*" >&2; exit 1; }

MODE=redirect PORT=443 PROXY_PORT=8443 V6=0 BACKEND=iptables MARK=1 TABLE=100
SUFFIX=${LABNS_SUFFIX:-}
while [ $# -gt 0 ]; do
    case $1 in
    --mode) MODE=${2:?}; shift 2 ;;
    --mode=*) MODE=${1#*=}; shift ;;
    --port) PORT=${2:?}; shift 2 ;;
    --port=*) PORT=${1#*=}; shift ;;
    --proxy-port) PROXY_PORT=${2:?}; shift 2 ;;
    --proxy-port=*) PROXY_PORT=${1#*=}; shift ;;
    --v6) V6=1; shift ;;
    --backend) BACKEND=${2:?}; shift 2 ;;
    --backend=*) BACKEND=${1#*=}; shift ;;
    --mark) MARK=${2:?}; shift 2 ;;
    --mark=*) MARK=${1#*=}; shift ;;
    --table) TABLE=${2:?}; shift 2 ;;
    --table=*) TABLE=${1#*=}; shift ;;
    --suffix) SUFFIX=${2?}; shift 2 ;;
    --suffix=*) SUFFIX=${1#*=}; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "lab-netns.sh: unknown option $1" >&2; usage ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
CMD=$1; shift

case $MODE in redirect|tproxy|none) ;; *) die "--mode: redirect, tproxy or none (not $MODE)" ;; esac
case $BACKEND in iptables|legacy|nft) ;; *) die "--backend: iptables, legacy or nft (not $BACKEND)" ;; esac
for n in "$PORT" "$PROXY_PORT" "$MARK" "$TABLE"; do
    case $n in ''|*[!0-9]*) die "not a number: $n" ;; esac
done
for n in "$PORT" "$PROXY_PORT"; do
    if [ "$n" -lt 1 ] || [ "$n" -gt 65535 ]; then die "not a port (1 to 65535): $n"; fi
done
[ "$MARK" -ge 1 ] || die "--mark: 1 or more"
case $SUFFIX in *[!A-Za-z0-9_-]*) die "--suffix: letters, digits, _ and - only" ;; esac
# Interface names are per namespace; only namespace names need the suffix.
[ ${#SUFFIX} -le 20 ] || die "--suffix: at most 20 characters"

NS_C=tfc$SUFFIX NS_R=tfr$SUFFIX NS_S=tfs$SUFFIX
IF_C=veth-c IF_RC=veth-rc IF_RS=veth-rs IF_S=veth-s
C4=10.200.1.2 RC4=10.200.1.1 RS4=10.200.2.1 S4=10.200.2.2
C6=fd00:200:1::2 RC6=fd00:200:1::1 RS6=fd00:200:2::1 S6=fd00:200:2::2
NFT_TABLE=tlsfault_lab

need_root() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and netfilter rules)"
    command -v ip >/dev/null || die "no ip command (Debian package iproute2)"
}

ns_of() {  # client|router|server|c|r|s|full name -> namespace name
    case $1 in
    client|c|tfc|"$NS_C") echo "$NS_C" ;;
    router|r|tfr|"$NS_R") echo "$NS_R" ;;
    server|s|tfs|"$NS_S") echo "$NS_S" ;;
    *) die "unknown namespace $1 (client, router or server)" ;;
    esac
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }
inr() { ip netns exec "$NS_R" "$@"; }

# iptables for IPv4 / IPv6 in tfr, per --backend.  "iptables" prefers the
# distribution's iptables (nft backend on Debian 12) and falls back to
# iptables-legacy when that cannot work in the namespace.
IPT='' IP6T=''
pick_iptables() {
    if [ "$BACKEND" = legacy ]; then
        IPT=iptables-legacy IP6T=ip6tables-legacy
    else
        IPT=iptables IP6T=ip6tables
        if ! command -v iptables >/dev/null || ! inr iptables -t nat -S >/dev/null 2>&1; then
            IPT=iptables-legacy IP6T=ip6tables-legacy
        fi
    fi
    command -v "$IPT" >/dev/null || die "no $IPT (Debian package iptables)"
    inr "$IPT" -t nat -S >/dev/null 2>&1 || die "$IPT does not work in $NS_R"
}

sysctl_r() { inr sysctl -q -w "$1=$2" >/dev/null; }

down() {
    need_root
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "$pids" ]; then
            echo "lab-netns.sh: stopping processes in $ns: $pids" >&2
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            i=0
            while [ $i -lt 20 ] && [ -n "$(ip netns pids "$ns" 2>/dev/null)" ]; do
                sleep 0.1; i=$((i + 1))
            done
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns" 2>/dev/null || true
    done
    return 0
}

rules_iptables() {
    pick_iptables
    for fam in 4 6; do
        if [ $fam = 4 ]; then ipt=$IPT local_net=0.0.0.0/0 ipf=""
        else [ "$V6" = 1 ] || continue; ipt=$IP6T local_net=::/0 ipf=-6
        fi
        case $MODE in
        redirect)
            inr "$ipt" -t nat -A PREROUTING -i "$IF_RC" -p tcp --dport "$PORT" \
                -j REDIRECT --to-ports "$PROXY_PORT"
            ;;
        tproxy)
            # Packets of connections tlsfault already holds (both legs, also the
            # server's answers to a spoofed client address) go to the local
            # socket; new client connections to PORT go to the listener.
            inr "$ipt" -t mangle -A PREROUTING -p tcp -m socket --transparent \
                -j MARK --set-mark "$MARK/$MARK"
            inr "$ipt" -t mangle -A PREROUTING -i "$IF_RC" -p tcp --dport "$PORT" \
                -j TPROXY --on-port "$PROXY_PORT" --tproxy-mark "$MARK/$MARK"
            inr ip $ipf rule add fwmark "$MARK/$MARK" lookup "$TABLE"
            inr ip $ipf route add local "$local_net" dev lo table "$TABLE"
            ;;
        esac
    done
}

rules_nft() {
    command -v nft >/dev/null || die "no nft (Debian package nftables)"
    case $MODE in
    redirect)
        fam=ip; [ "$V6" = 1 ] && fam=inet
        inr nft -f - <<EOF
table $fam $NFT_TABLE {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "$IF_RC" tcp dport $PORT redirect to :$PROXY_PORT
    }
}
EOF
        ;;
    tproxy)
        if [ "$V6" = 1 ]; then fam=inet; else fam=ip; fi
        inr nft -f - <<EOF
table $fam $NFT_TABLE {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        meta l4proto tcp socket transparent 1 meta mark set $MARK accept
        iifname "$IF_RC" meta l4proto tcp th dport $PORT tproxy to :$PROXY_PORT meta mark set $MARK accept
    }
}
EOF
        inr ip rule add fwmark "$MARK/$MARK" lookup "$TABLE"
        inr ip route add local 0.0.0.0/0 dev lo table "$TABLE"
        if [ "$V6" = 1 ]; then
            inr ip -6 rule add fwmark "$MARK/$MARK" lookup "$TABLE"
            inr ip -6 route add local ::/0 dev lo table "$TABLE"
        fi
        ;;
    esac
}

up() {
    need_root
    down
    # shellcheck disable=SC2154 # st is set inside the trap
    trap 'st=$?; [ "$st" -eq 0 ] || { echo "lab-netns.sh: up failed; removing the half-made lab" >&2; down; }' EXIT
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    # Both veth ends are created directly inside the namespaces.
    ip -n "$NS_C" link add "$IF_C" type veth peer name "$IF_RC" netns "$NS_R"
    ip -n "$NS_S" link add "$IF_S" type veth peer name "$IF_RS" netns "$NS_R"

    if [ "$V6" = 1 ]; then
        # No router advertisements or autoconfiguration: static addresses only.
        for ns in "$NS_C" "$NS_R" "$NS_S"; do
            ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_ra=0 \
                net.ipv6.conf.default.accept_ra=0 >/dev/null
        done
    fi
    ip -n "$NS_C" addr add "$C4/24" dev "$IF_C"
    ip -n "$NS_R" addr add "$RC4/24" dev "$IF_RC"
    ip -n "$NS_R" addr add "$RS4/24" dev "$IF_RS"
    ip -n "$NS_S" addr add "$S4/24" dev "$IF_S"
    if [ "$V6" = 1 ]; then
        ip -n "$NS_C" addr add "$C6/64" dev "$IF_C" nodad
        ip -n "$NS_R" addr add "$RC6/64" dev "$IF_RC" nodad
        ip -n "$NS_R" addr add "$RS6/64" dev "$IF_RS" nodad
        ip -n "$NS_S" addr add "$S6/64" dev "$IF_S" nodad
    fi
    ip -n "$NS_C" link set "$IF_C" up
    ip -n "$NS_R" link set "$IF_RC" up
    ip -n "$NS_R" link set "$IF_RS" up
    ip -n "$NS_S" link set "$IF_S" up
    ip -n "$NS_C" route add default via "$RC4"
    ip -n "$NS_S" route add default via "$RS4"
    if [ "$V6" = 1 ]; then
        ip -n "$NS_C" -6 route add default via "$RC6"
        ip -n "$NS_S" -6 route add default via "$RS6"
    fi

    # Forwarding in the router namespace only.  Reverse-path filtering off
    # there: with a spoofed source (tproxy) the router sees its own client's
    # address on both sides.
    sysctl_r net.ipv4.ip_forward 1
    for c in all default "$IF_RC" "$IF_RS" lo; do
        sysctl_r "net.ipv4.conf.$c.rp_filter" 0
    done
    if [ "$V6" = 1 ]; then
        sysctl_r net.ipv6.conf.all.forwarding 1
    fi

    case $BACKEND in
    nft) rules_nft ;;
    *) rules_iptables ;;
    esac
    trap - EXIT
    echo "lab-netns.sh: up: $NS_C ($C4) -> $NS_R (mode $MODE, port $PORT -> $PROXY_PORT," \
        "backend $BACKEND) -> $NS_S ($S4)" >&2
    [ "$V6" = 0 ] || echo "lab-netns.sh: IPv6: $C6 -> $S6" >&2
    return 0
}

status() {
    need_root
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        if ! ns_exists "$ns"; then
            echo "== $ns: absent"
            continue
        fi
        echo "== $ns"
        ip -n "$ns" -br addr show | sed 's/^/  /'
        ip -n "$ns" route show | sed 's/^/  route: /'
        ip -n "$ns" -6 route show 2>/dev/null | grep -v '^fe80\|^multicast\|^ff00' | sed 's/^/  route6: /' || true
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        [ -z "$pids" ] || echo "  processes: $pids"
    done
    ns_exists "$NS_R" || return 0
    echo "== $NS_R forwarding: ipv4 $(inr sysctl -n net.ipv4.ip_forward)," \
        "ipv6 $(inr sysctl -n net.ipv6.conf.all.forwarding)"
    inr ip rule show | grep -v '^0:\|^3276[67]:' | sed 's/^/  rule: /' || true
    inr ip -6 rule show | grep -v '^0:\|^3276[67]:' | sed 's/^/  rule6: /' || true
    inr ip route show table "$TABLE" 2>/dev/null | sed "s/^/  table $TABLE: /" || true
    inr ip -6 route show table "$TABLE" 2>/dev/null | sed "s/^/  table6 $TABLE: /" || true
    if command -v nft >/dev/null; then
        inr nft list ruleset 2>/dev/null | sed 's/^/  /' || true
    fi
    if command -v iptables-legacy >/dev/null; then
        for t in nat mangle; do
            inr iptables-legacy -t "$t" -S 2>/dev/null | grep '^-A' | sed "s/^/  legacy $t: /" || true
            inr ip6tables-legacy -t "$t" -S 2>/dev/null | grep '^-A' | sed "s/^/  legacy6 $t: /" || true
        done
    fi
}

case $CMD in
up) [ $# -eq 0 ] || usage; up ;;
down) [ $# -eq 0 ] || usage; down ;;
status) [ $# -eq 0 ] || usage; status ;;
exec)
    [ $# -ge 2 ] || usage
    need_root
    ns=$(ns_of "$1"); shift
    ns_exists "$ns" || die "$ns does not exist (run: $0 up)"
    exec ip netns exec "$ns" "$@"
    ;;
*) usage ;;
esac

#!/bin/sh
# The lab CA from the shell.
#   scripts/lab-ca.sh init DIR      make a lab CA in DIR (tlsfault --ca-init DIR)
#   scripts/lab-ca.sh show DIR      subjects, validity and SHA-256 fingerprints; checks that
#                                   each intermediate chains to its own root and only to it
#   scripts/lab-ca.sh nss-home DIR  prints a new temporary HOME whose NSS database trusts
#                                   DIR/root.pem, for a browser run that leaves the real
#                                   profile alone:  HOME=$(scripts/lab-ca.sh nss-home DIR) chromium ...
# The tlsfault binary is $TF_BIN, else build/src/tlsfault, else the one on PATH.
# Keys are never printed.
set -eu

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1 dir=$2
top=$(cd "$(dirname "$0")/.." && pwd)

tlsfault_bin() {
    if [ -n "${TF_BIN:-}" ]; then echo "$TF_BIN"
    elif [ -x "$top/build/src/tlsfault" ]; then echo "$top/build/src/tlsfault"
    else command -v tlsfault || { echo "lab-ca.sh: no tlsfault binary (set TF_BIN)" >&2; exit 1; }
    fi
}

need_ca() {
    for f in root.pem intermediate.pem untrusted-root.pem untrusted-intermediate.pem; do
        [ -r "$dir/$f" ] || { echo "lab-ca.sh: $dir/$f: not readable (make one: $0 init $dir)" >&2; exit 1; }
    done
}

case $cmd in
init)
    exec "$(tlsfault_bin)" --ca-init "$dir"
    ;;
show)
    need_ca
    for f in root intermediate untrusted-root untrusted-intermediate; do
        echo "$f.pem"
        openssl x509 -in "$dir/$f.pem" -noout -subject -startdate -enddate -fingerprint -sha256 |
            sed 's/^/  /'
    done
    openssl verify -CAfile "$dir/root.pem" "$dir/intermediate.pem" >/dev/null
    openssl verify -CAfile "$dir/untrusted-root.pem" "$dir/untrusted-intermediate.pem" >/dev/null
    if openssl verify -CAfile "$dir/root.pem" "$dir/untrusted-intermediate.pem" >/dev/null 2>&1; then
        echo "lab-ca.sh: untrusted-intermediate.pem chains to root.pem: the CA is broken" >&2
        exit 1
    fi
    echo "ok: intermediate.pem chains to root.pem; untrusted-intermediate.pem only to untrusted-root.pem"
    ;;
nss-home)
    need_ca
    command -v certutil >/dev/null || { echo "lab-ca.sh: certutil missing (apt-get install libnss3-tools)" >&2; exit 1; }
    root=$(cd "$dir" && pwd)/root.pem
    home=$(mktemp -d /tmp/tlsfault-nss-XXXXXX)
    mkdir -p "$home/.pki/nssdb"
    certutil -d "sql:$home/.pki/nssdb" -N --empty-password
    certutil -d "sql:$home/.pki/nssdb" -A -t "C,," -n tlsfault-lab -i "$root"
    echo "$home"
    ;;
*)
    usage
    ;;
esac

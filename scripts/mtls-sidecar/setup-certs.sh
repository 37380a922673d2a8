#!/bin/sh
# setup-certs.sh: a demo certificate authority and certificates for running
# KayaDB behind mTLS sidecars (ghostunnel, stunnel) or with its native TLS.
#
#   scripts/mtls-sidecar/setup-certs.sh                   # writes ./certs
#   CERTS_DIR=/etc/kaya/certs scripts/mtls-sidecar/setup-certs.sh
#
# It writes to CERTS_DIR (default ./certs):
#   ca.crt, ca.key            the demo CA (10 years)
#   nodeN.crt, nodeN.key      node N = 1..NODES: CN nodeN.kaya.local and
#                             OU kayadb-node (for ghostunnel --allow-ou), SANs
#                             DNS:nodeN.kaya.local, DNS:localhost,
#                             IP:127.0.0.1 (and EXTRA_SANS), extended key
#                             usage serverAuth + clientAuth, so the same
#                             files serve a sidecar in server mode, a
#                             sidecar in client mode (raft to the peers) and
#                             `kayadb-server --tls-cert nodeN.crt --tls-key
#                             nodeN.key --tls-ca ca.crt`
#   client.crt, client.key    CN admin-client.kaya.local, OU kayadb-client,
#                             SAN DNS:admin-client.kaya.local, clientAuth only
#   nodeN.p12, client.p12     PKCS#12 bundles (key, certificate, CA) for
#                             ghostunnel --keystore; password P12_PASSWORD
#                             (default: empty, i.e. `--storepass ""` or no
#                             --storepass at all)
# Keys and .p12 files are 0600; certificates 0644.
#
# Settings (environment):
#   CERTS_DIR    output directory                      (./certs)
#   NODES        number of node certificates           (3)
#   DOMAIN       DNS suffix of the node names          (kaya.local)
#   EXTRA_SANS   extra SANs for every node certificate, comma separated,
#                e.g. "IP:10.0.0.11,DNS:db1.example.com" (none)
#   DAYS         validity of node and client certificates in days (825)
#   KEY_TYPE     ec (P-256) or rsa (3072 bits)         (ec)
#   P12_PASSWORD password of the .p12 bundles          (empty)
#   FORCE=1      replace an existing CA (and every certificate) in CERTS_DIR
#   REUSE_CA=1   keep the existing CA and issue fresh node and client
#                certificates from it (certificate rotation)
# Without FORCE=1 or REUSE_CA=1 the script refuses to touch a directory that
# already holds a CA.
set -eu

CERTS_DIR="${CERTS_DIR:-./certs}"
NODES="${NODES:-3}"
DOMAIN="${DOMAIN:-kaya.local}"
EXTRA_SANS="${EXTRA_SANS:-}"
DAYS="${DAYS:-825}"
CA_DAYS="${CA_DAYS:-3650}"
KEY_TYPE="${KEY_TYPE:-ec}"
P12_PASSWORD="${P12_PASSWORD:-}"
FORCE="${FORCE:-0}"
REUSE_CA="${REUSE_CA:-0}"

die() { echo "setup-certs.sh: $*" >&2; exit 1; }

command -v openssl >/dev/null 2>&1 ||
  die "openssl is not installed (Debian/Ubuntu: apt-get install openssl; macOS: brew install openssl)"

case "$NODES" in '' | *[!0-9]*) die "NODES must be a positive integer, not '$NODES'" ;; esac
[ "$NODES" -ge 1 ] || die "NODES must be at least 1"
case "$KEY_TYPE" in ec | rsa) ;; *) die "KEY_TYPE must be ec or rsa, not '$KEY_TYPE'" ;; esac

mkdir -p "$CERTS_DIR"
CERTS_DIR="$(cd "$CERTS_DIR" && pwd)"

new_ca=1
if [ -e "$CERTS_DIR/ca.crt" ] || [ -e "$CERTS_DIR/ca.key" ]; then
  if [ "$FORCE" = 1 ]; then
    echo "FORCE=1: replacing the CA in $CERTS_DIR (every certificate issued by the old one stops being trusted)"
  elif [ "$REUSE_CA" = 1 ]; then
    [ -f "$CERTS_DIR/ca.crt" ] && [ -f "$CERTS_DIR/ca.key" ] ||
      die "REUSE_CA=1 needs both $CERTS_DIR/ca.crt and $CERTS_DIR/ca.key"
    new_ca=0
  else
    die "$CERTS_DIR already holds a CA (ca.crt/ca.key); refusing to overwrite it.
  FORCE=1     replaces the CA and every certificate,
  REUSE_CA=1  keeps the CA and issues new node and client certificates,
  or choose another CERTS_DIR."
  fi
fi

# Keys are created private; the umask covers the moment before chmod.
umask 077
work="$(mktemp -d "${TMPDIR:-/tmp}/kaya-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

newkey() { # newkey FILE
  if [ "$KEY_TYPE" = rsa ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  fi
  chmod 600 "$1"
}

created=""
note() { created="$created
  $1"; }

if [ "$new_ca" = 1 ]; then
  cat >"$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = KayaDB demo CA
O = KayaDB demo
[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
CNF
  newkey "$work/ca.key"
  openssl req -new -x509 -key "$work/ca.key" -config "$work/ca.cnf" -extensions v3_ca \
    -days "$CA_DAYS" -sha256 -out "$work/ca.crt"
  mv "$work/ca.key" "$CERTS_DIR/ca.key"
  mv "$work/ca.crt" "$CERTS_DIR/ca.crt"
  chmod 600 "$CERTS_DIR/ca.key"
  chmod 644 "$CERTS_DIR/ca.crt"
  rm -f "$CERTS_DIR/ca.srl"
  note "ca.crt, ca.key: the demo CA \"KayaDB demo CA\", valid $CA_DAYS days"
else
  note "ca.crt, ca.key: kept (REUSE_CA=1)"
fi

# issue NAME OU CN EKU SANS: NAME.key, NAME.crt and NAME.p12 signed by the CA.
issue() {
  name="$1" ou="$2" cn="$3" eku="$4" sans="$5"
  cat >"$work/$name.ext" <<CNF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = $eku
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
CNF
  newkey "$work/$name.key"
  openssl req -new -key "$work/$name.key" -subj "/O=KayaDB demo/OU=$ou/CN=$cn" -out "$work/$name.csr"
  openssl x509 -req -in "$work/$name.csr" -CA "$CERTS_DIR/ca.crt" -CAkey "$CERTS_DIR/ca.key" \
    -CAserial "$CERTS_DIR/ca.srl" -CAcreateserial -days "$DAYS" -sha256 \
    -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
  # PBE-SHA1-3DES and a SHA-1 MAC: the PKCS#12 encoding that every reader
  # understands (ghostunnel's Go decoders, Java, older OpenSSL and stunnel).
  openssl pkcs12 -export -in "$work/$name.crt" -inkey "$work/$name.key" \
    -certfile "$CERTS_DIR/ca.crt" -name "$cn" \
    -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 \
    -passout "pass:$P12_PASSWORD" -out "$work/$name.p12"
  chmod 600 "$work/$name.key" "$work/$name.p12"
  chmod 644 "$work/$name.crt"
  mv "$work/$name.key" "$work/$name.crt" "$work/$name.p12" "$CERTS_DIR/"
  openssl verify -CAfile "$CERTS_DIR/ca.crt" "$CERTS_DIR/$name.crt" >/dev/null ||
    die "$name.crt does not verify against ca.crt"
}

i=1
while [ "$i" -le "$NODES" ]; do
  cn="node$i.$DOMAIN"
  sans="DNS:$cn,DNS:localhost,IP:127.0.0.1${EXTRA_SANS:+,$EXTRA_SANS}"
  issue "node$i" kayadb-node "$cn" "serverAuth,clientAuth" "$sans"
  note "node$i.crt, node$i.key, node$i.p12: CN $cn (OU kayadb-node), SANs $sans, serverAuth+clientAuth"
  i=$((i + 1))
done
issue client kayadb-client "admin-client.$DOMAIN" "clientAuth" "DNS:admin-client.$DOMAIN"
note "client.crt, client.key, client.p12: CN admin-client.$DOMAIN (OU kayadb-client), SAN DNS:admin-client.$DOMAIN, clientAuth"

if [ -n "$P12_PASSWORD" ]; then p12note="the password in P12_PASSWORD"; else p12note="an empty password"; fi
echo "created in $CERTS_DIR:$created
.p12 bundles use $p12note; keys and .p12 files are mode 0600.
node certificates are valid for $DAYS days; check with
  openssl x509 -in $CERTS_DIR/node1.crt -noout -subject -ext subjectAltName,extendedKeyUsage -enddate"

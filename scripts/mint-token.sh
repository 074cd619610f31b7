#!/usr/bin/env bash
# Mints a test token for chat_jwt (SPEC §10) with the openssl CLI alone.
#
#   scripts/mint-token.sh KEY [ALG] [SUB] [TTL] [ROOMS]
#
# KEY    an HMAC secret file (HS*: the file's bytes, one trailing newline
#        ignored, as chat_jwt_key reads it) or a PEM private key (RS*, ES*)
# ALG    HS256 (default), HS384, HS512, RS256, RS384, RS512, ES256, ES384
# SUB    the user id (default: demo)
# TTL    seconds until exp (default: 3600)
# ROOMS  a JSON array for the rooms claim, e.g. '["lobby","team-*"]'
#
# Example:
#   head -c 32 /dev/urandom | base64 > secret.key
#   ws://127.0.0.1:8080/chat?token=$(scripts/mint-token.sh secret.key HS256 ann)
set -euo pipefail

key=${1:?usage: $0 KEY [ALG] [SUB] [TTL] [ROOMS]}
alg=${2:-HS256}
sub=${3:-demo}
ttl=${4:-3600}
rooms=${5:-}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }

bits=${alg:2}
case $alg in
    HS256|HS384|HS512|RS256|RS384|RS512|ES256|ES384) ;;
    *) echo "$0: unknown algorithm $alg" >&2; exit 2 ;;
esac

now=$(date +%s)
claims="{\"sub\":\"$(json_str "$sub")\",\"iat\":$now,\"exp\":$((now + ttl))"
[ -n "$rooms" ] && claims="$claims,\"rooms\":$rooms"
claims="$claims}"

input="$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url).$(printf '%s' "$claims" | b64url)"

case $alg in
HS*)
    # the secret as hex, so that any byte may be in it
    hex=$(od -An -v -tx1 "$key" | tr -d ' \n')
    case $hex in
        *0d0a) hex=${hex%0d0a} ;;
        *0a) hex=${hex%0a} ;;
    esac
    sig=$(printf '%s' "$input" \
          | openssl dgst -sha"$bits" -mac HMAC -macopt hexkey:"$hex" -binary \
          | b64url)
    ;;
RS*)
    sig=$(printf '%s' "$input" | openssl dgst -sha"$bits" -sign "$key" | b64url)
    ;;
ES*)
    # openssl gives DER; JOSE wants r || s, each the curve's size
    n=$((bits / 4))
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    printf '%s' "$input" | openssl dgst -sha"$bits" -sign "$key" > "$tmp"
    rs=""
    for v in $(openssl asn1parse -inform DER -in "$tmp" \
               | awk -F: '/INTEGER/ { print $NF }'); do
        v=$(printf '%s' "$v" | sed 's/^\(00\)*//')
        while [ ${#v} -lt $n ]; do v="0$v"; done
        rs="$rs$v"
    done
    sig=$(printf '%s' "$rs" | sed 's/../\\x&/g' | xargs -0 printf '%b' | b64url)
    ;;
esac

printf '%s.%s\n' "$input" "$sig"

#!/bin/bash
# deploy-docs.sh - docs/deployment.md agrees with the program: every option in its
# configuration table exists in `hybridmoe-server --help` with the default the table gives.
set -u
. "$(dirname "$0")/deploy-lib.sh"

[ -x "$BLD/hybridmoe-server" ] || hm_skip "no $BLD/hybridmoe-server"
DOC="$SRC/docs/deployment.md"
"$BLD/hybridmoe-server" --help > "$TMP/help.txt" 2>&1 || hm_fail "--help failed"

# Rows look like: | `host`, `port` | `127.0.0.1`, `8080` | meaning |
sed -n '/^| Option | Default |/,/^$/p' "$DOC" | tail -n +3 | grep '^|' > "$TMP/rows.txt"
[ -s "$TMP/rows.txt" ] || hm_fail "no option table in $DOC"
n=0
while IFS='|' read -r _ names defs _; do
    names=$(echo "$names" | tr -d '` ')
    defs=$(echo "$defs" | sed 's/ (.*)//' | tr -d '` ')
    IFS=',' read -r -a na <<< "$names"
    IFS=',' read -r -a da <<< "$defs"
    [ "${#na[@]}" = "${#da[@]}" ] || hm_fail "table row '$names' has ${#na[@]} names, ${#da[@]} defaults"
    for i in "${!na[@]}"; do
        opt=${na[$i]} def=${da[$i]}
        line=$(grep -E -- "^ +--$opt " "$TMP/help.txt") || hm_fail "--help has no --$opt (docs table)"
        # "$(pkgdatadir)" stands for the install path in the docs
        case "$def" in *'$(pkgdatadir)'*) def=${def/\$(pkgdatadir)/}; pat="$def\"\\)$" ;; empty) def=""; pat="\"\"\\)$" ;; *) pat="\"$def\"\\)$" ;; esac
        echo "$line" | grep -qE -- "\(default: [^ ]*$pat" ||
            hm_fail "docs say --$opt defaults to '${da[$i]}', --help says: $line"
        n=$((n + 1))
    done
done < "$TMP/rows.txt"
hm_log "$n options in docs/deployment.md match --help"
echo "PASS: docs/deployment.md matches --help"

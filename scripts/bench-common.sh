# Shared by the A/B benchmark scripts (bench-ab.sh, bench-paired.sh);
# sourced, not run. They set REPO_ROOT and D (their work directory, with
# D/bin) first.

# build_server REV NAME builds kayadb-server at git revision REV into
# $D/bin/kayadb-server-NAME, in a temporary worktree.
build_server() {
  local wt="$D/src-$2"
  rm -rf "$wt"
  git -C "$REPO_ROOT" worktree add -q --detach "$wt" "$1"
  (cd "$wt" && go build -o "$D/bin/kayadb-server-$2" ./cmd/kayadb-server)
  git -C "$REPO_ROOT" worktree remove --force "$wt"
}

# Puts the repository's virtual environment (made by `make install`) and its utils/ on the path.
_root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd -P)
if [ ! -x "$_root/.venv/bin/python" ]; then
  echo "error: $_root/.venv not found; run 'make install' in $_root first" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH="$_root/.venv/bin:$_root/utils:$PATH"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PYTHONIOENCODING=utf-8
unset _root

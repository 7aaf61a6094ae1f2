#!/bin/bash
# Stand-in CANN shared libraries so MindSpore's Ascend plugin loads on a machine without Ascend software, for a
# dry-run compile only (tools/ascend_dryrun.py builds them once into its cache and calls this script).
# Every function the plugin needs from CANN is defined to return 0; ge::StatusFactory::Instance returns a real
# object because static constructors of the plugin use it. Nothing here runs a kernel: with MS_SIMULATION_LEVEL=0
# MindSpore compiles the graph and stops.
# Usage: PYTHON=python3 bash tools/make_cann_stub.sh OUTDIR   -> OUTDIR/latest/lib64/*.so
# (the directory name must contain "latest": the plugin looks for CANN under such a path). Needs gcc, g++, nm, readelf.
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${1:?usage: make_cann_stub.sh OUTDIR}/latest/lib64
for tool in gcc g++ nm readelf; do
  command -v "$tool" >/dev/null || { echo "make_cann_stub.sh: $tool not found (needs gcc, g++, nm, readelf)" >&2; exit 2; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
MS_LIB=$("$PYTHON" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('mindspore').origin))")/lib
PY_BIN=$(readlink -f "$("$PYTHON" -c "import sys; print(sys.executable)")")
PLUGINS="$MS_LIB/plugin/libmindspore_ascend.so.2 $MS_LIB/plugin/libmindspore_ops_ascend.so $(find "$MS_LIB/plugin/ascend" -name '*.so*' -type f)"

# 1. symbols something already loaded will define: MindSpore's own libraries, Python, the C/C++ runtime
{
  for lib in $(find "$MS_LIB" -name '*.so*' -type f) "$MS_LIB"/../_c_expression*.so "$PY_BIN" \
             $(ldd "$PY_BIN" 2>/dev/null | awk '/=>/ {print $3}') \
             /lib/x86_64-linux-gnu/{libc.so.6,libstdc++.so.6,libm.so.6,libgcc_s.so.1,libpthread.so.0,libdl.so.2,librt.so.1}; do
    nm -D --defined-only "$lib" 2>/dev/null | awk '{print $3}' || true
  done
} | sed 's/@.*//' | sort -u > "$WORK/defined"

# 2. symbols the Ascend plugin imports that nothing defines: those come from CANN
for lib in $PLUGINS; do readelf -W --dyn-syms "$lib" 2>/dev/null | awk '$7 == "UND" && $8 != "" {print $8}' || true; done \
  | sed 's/@.*//' | sort -u | comm -23 - "$WORK/defined" \
  | grep -vE '^(GOMP_|omp_|_ITM_|__gmon_start__|__cxa_finalize|__gcov|_ZN2ge13StatusFactory8InstanceEv$)' > "$WORK/missing" || true

# 3. one object defining each missing symbol as "return 0", plus the one symbol that must return an object
awk 'BEGIN {print ".text"}
     {print ".globl " $1 "\n.type " $1 ",@function\n" $1 ":\n  xor %eax, %eax\n  ret"}
     END {print ".section .note.GNU-stack,\"\",@progbits"}' "$WORK/missing" > "$WORK/zero.s"
cat > "$WORK/status_factory.cc" <<'CC'
#include <cstdint>
#include <map>
#include <string>
namespace ge {
struct StatusFactory { static StatusFactory *Instance(); std::map<uint32_t, std::string> messages; };
StatusFactory *StatusFactory::Instance() { static StatusFactory factory; return &factory; }
}  // namespace ge
CC
gcc -c "$WORK/zero.s" -o "$WORK/zero.o"
g++ -O1 -fPIC -c "$WORK/status_factory.cc" -o "$WORK/status_factory.o"

# 4. every CANN library the plugin links against (not shipped with MindSpore, not on the system) -> the stub
for lib in $PLUGINS; do readelf -d "$lib" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'; done | sort -u > "$WORK/needed"
# (no `producer | grep -q` below: under pipefail grep's early exit can SIGPIPE the producer, the test then fails
# at random and a system library such as libgomp.so.1 got stubbed, which broke `import mindspore` in the compile)
LDCONFIG=$(command -v ldconfig || ls /sbin/ldconfig /usr/sbin/ldconfig 2>/dev/null | head -1 || true)
if [[ -n $LDCONFIG ]]; then "$LDCONFIG" -p > "$WORK/system" || true; else : > "$WORK/system"; fi
on_system() {  # a library the dynamic linker finds already (libc, libstdc++...): never replace it
  if [[ -s $WORK/system ]]; then grep -q "^\s*$1 " "$WORK/system"; else
    [[ -n $(find /lib /lib64 /usr/lib /usr/lib64 -name "$1" -print -quit 2>/dev/null) ]]; fi
}
built=0
while read -r soname; do
  [[ $soname == *aarch64* || $soname == _c_dataengine* ]] && continue
  [[ -n $(find "$MS_LIB" -name "$soname" -print -quit) ]] && continue
  on_system "$soname" && continue
  g++ -shared -o "$OUT/$soname" "$WORK/zero.o" "$WORK/status_factory.o" -Wl,-soname,"$soname"
  built=$((built + 1))
done < "$WORK/needed"
echo "stand-in CANN libraries in $OUT: $built, stubbed symbols: $(wc -l < "$WORK/missing")"

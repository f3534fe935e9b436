#!/usr/bin/env python3
"""Cycles per iteration of the 196x2 OT solve on a Cortex-M4F, by a cycle model by instruction
class, against the solve's arithmetic floor.

QEMU counts instructions exactly but models no cycles. This script runs the firmware test
program's `trace` mode (the 196x2 solve at tol 0 for exactly 100 and then 200 iterations, each
between two calls of `fedotp_trace_mark`) under qemu with one instruction per translation block
and an execution log, maps every executed address to its instruction in the ELF's disassembly
(llvm-objdump), and charges each instruction the cycles the ARM Cortex-M4 Technical Reference
Manual (r0p1, ARM DDI 0439) gives for it: the processor instruction timings table (chapter 3)
and the FPU instruction table (chapter 7). The difference of the two solves, divided by 100, is
one iteration, free of the setup and the plan output.

The timings used (P: the pipeline refill after a taken branch, 1 to 3 cycles by the TRM, with
the alignment and width of the target; N: registers, in words, a multiple transfer moves):
  integer data processing, moves, compares, shifts, extends, bit fields   1
  MUL, MLA, MLS, long multiplies and multiply-accumulates                 1 (the M4's MAC)
  SDIV, UDIV                                    2 to 12 (with the operands): range 2..12
  LDR/STR of any width, single                  2; 1 when it follows another single load or
                                                store (their address and data phases pipeline)
  LDRD, STRD, LDM, STM, PUSH                    1 + N
  POP with PC, LDM with PC                      1 + N + P
  B, BL, BX, BLX, CBZ/CBNZ, conditional B       1 not taken, 1 + P taken (BL, BX: always taken)
  TBB, TBH                                      2 + P
  IT                                            folds into a preceding 16-bit instruction
                                                (0 cycles), else 1: range 0..1
  VDIV, VSQRT                                   14
  VMLA, VMLS, VNMLA, VNMLS, VFMA, VFMS, VFNMA, VFNMS   3
  VADD, VSUB, VMUL, VNMUL, VABS, VNEG, VCMP, VCVT, VMOV, VMRS, VMSR   1
  VMOV between two core registers and a double  2
  VLDR, VSTR                                    2 (whether they pipeline with neighbouring
                                                loads and stores the TRM does not say: the best
                                                case lets them, as integer ones do)
  VLDM, VSTM, VPUSH, VPOP                       1 + N

VDIV overlap: the FPU table's notes say integer-only instructions that follow a VDIV or VSQRT
complete while it runs (out of order). The worst case charges the full 14 cycles and overlaps
nothing; the best case hides the cycles of the integer instructions after a VDIV, up to its 13
remaining cycles, until the next floating-point instruction (which waits for the divider).

Limits of the model: no flash wait states or prefetch misses (code and data in zero-wait-state
memory), no bus contention, no interrupts; the address-generation interlock (a load whose
address a preceding instruction computed) and result latencies of chained floating-point
operations are not modelled; an instruction whose condition fails in an IT block is charged as
if it ran.

The floor per iteration: the divisions the algorithm needs (u = a / (K v): one per patch, 196;
v = b / (K^T u): one per prompt, 2) at 14 cycles, and the multiply-adds of the two kernel-vector
products (2 x 196 x 2 = 784) at their cheapest on FPv4, a VMUL and a VADD of 1 cycle each (a
VMLA or VFMA takes 3). Loading the kernel and the vectors is left out, so the floor is a lower
bound.

Usage: cycle_model.py ELF   (core/firmware/cycles.sh builds the ELF and runs this)
"""

import itertools
import os
import re
import subprocess
import sys
from collections import Counter

QEMU = [
    "qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic",
    "-icount", "shift=0",
    # The firmware's `trace` mode (src/main.rs reads its semihosting command line).
    "-semihosting-config", "enable=on,target=native,arg=trace",
    # One instruction per translation block and no chaining, so that the log has one line per
    # executed instruction.
    "-singlestep", "-d", "exec,nochain",
]
OBJDUMP = ["llvm-objdump", "--triple=thumbv7em", "--mcpu=cortex-m4"]
MARK = "fedotp_trace_mark"
# Logged only outside this function: its calibration loops run 8 M instructions.
CALIBRATION = "fedotp_firmware::instructions::InstructionCounter::calibrate"
TRACED_ITERATIONS = (100, 200)
SOLVE_LINE = re.compile(r"traced solve: (\d+) iterations, (\d+) instructions")
TICK_LINE = re.compile(r"calibration: ([\d.]+) instructions per SysTick tick")

# The pipeline refill after a taken branch, P: 1 to 3 cycles.
REFILL_BEST, REFILL_WORST = 1, 3
DIVISION_CYCLES = 14

# The floor (see the module docstring).
FLOOR_DIVISIONS = 196 + 2
FLOOR_MULTIPLY_ADDS = 2 * 196 * 2
MULTIPLY_ADD_CYCLES = 2

CLASSES = (
    "divisions (VDIV)",
    "FP multiply, add, subtract",
    "FP compare, move, convert, other",
    "loads and stores",
    "branches, calls, returns",
    "integer and other",
)
CONDITIONS = {"eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge",
              "lt", "gt", "le", "al"}
INTEGER_SINGLE_TRANSFERS = {"ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "str", "strb", "strh",
                            "ldrex", "strex", "ldrt", "strt"}
INTEGER_MULTIPLE_TRANSFERS = {"ldrd", "strd", "ldm", "ldmia", "ldmdb", "stm", "stmia", "stmdb",
                              "push", "pop"}
FP_MULTIPLE_TRANSFERS = {"vldm", "vldmia", "vldmdb", "vstm", "vstmia", "vstmdb", "vpush", "vpop"}
FP_MULTIPLY_ADD = {"vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"}
FP_ARITHMETIC = {"vadd", "vsub", "vmul", "vnmul"}
BRANCHES = {"b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh"}
INTEGER_DIVIDES = {"sdiv", "udiv"}
FP_DIVIDES = {"vdiv", "vsqrt"}
MULTIPLIES = {"mul", "mla", "mls", "umull", "smull", "umlal", "smlal", "umaal", "smmul"}
# IT and its forms of up to four instructions (ITT, ITE, ..., ITEEE).
IT_FORMS = {"it" + "".join(tail) for n in range(4) for tail in itertools.product("te", repeat=n)}


def fail(message):
    sys.exit(f"cycle_model.py: {message}")


def run(command):
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        fail(f"{command[0]} not found (.ci/run installs it)")
    except subprocess.CalledProcessError as error:
        fail(f"{' '.join(command)} failed: {error.stderr.strip()}")


def symbols(elf):
    """Address and size of each function in the ELF's symbol table, by demangled name."""
    # 00016300 g     F .text	00000006 fedotp_trace_mark
    function = re.compile(r"^([0-9a-f]+) .* F \S+\t([0-9a-f]+) (.+)$")
    table = {}
    for line in run(OBJDUMP + ["--syms", "--demangle", elf]).splitlines():
        match = function.match(line)
        if match:
            table[match.group(3)] = (int(match.group(1), 16), int(match.group(2), 16))
    return table


def find_symbol(table, prefix):
    """The function whose demangled name is `prefix` (Rust appends `::h<hash>`)."""
    found = [v for name, v in table.items() if name == prefix or name.startswith(prefix + "::h")]
    if len(found) != 1:
        fail(f"{len(found)} functions named {prefix} in the ELF's symbol table, expected one")
    return found[0]


class Instruction:
    """One instruction of the disassembly: its size, mnemonic without condition or suffix."""

    def __init__(self, address, size, mnemonic, operands):
        self.address = address
        self.size = size
        base = mnemonic.split(".")[0]
        if base not in KNOWN and base[-2:] in CONDITIONS and base[:-2] in KNOWN:
            base = base[:-2]
        if base not in KNOWN and base.endswith("s") and base[:-1] in KNOWN:
            base = base[:-1]  # the flag-setting form
        self.base = base
        self.operands = operands
        self.fp = base.startswith("v")
        self.writes_pc = (base in BRANCHES
                          or (base in ("pop", "ldm", "ldmia") and "pc" in operands)
                          or (base in ("ldr", "mov", "add") and operands.startswith("pc")))
        self.single_transfer = base in INTEGER_SINGLE_TRANSFERS or base in ("vldr", "vstr")

    def words(self):
        """Words a multiple transfer moves: LDRD/STRD 2; in a register list, a d register 2."""
        if self.base in ("ldrd", "strd"):
            return 2
        registers = self.operands[self.operands.index("{") + 1:self.operands.index("}")]
        return sum(2 if r.strip().startswith("d") else 1 for r in registers.split(","))


KNOWN = (INTEGER_SINGLE_TRANSFERS | INTEGER_MULTIPLE_TRANSFERS | FP_MULTIPLE_TRANSFERS
         | FP_MULTIPLY_ADD | FP_ARITHMETIC | BRANCHES | INTEGER_DIVIDES | MULTIPLIES | IT_FORMS
         | FP_DIVIDES | {"vldr", "vstr", "vmov", "vmrs", "vmsr", "vcmp", "vcmpe", "vcvt",
            "vabs", "vneg", "add", "adc", "sub", "sbc", "rsb", "mov", "mvn",
            "cmp", "cmn", "tst", "teq", "and", "orr", "eor", "bic", "orn", "lsl", "lsr", "asr",
            "ror", "rrx", "movw", "movt", "addw", "subw", "clz", "ubfx", "sbfx", "bfi", "bfc",
            "uxtb", "uxth", "sxtb", "sxth", "uxtab", "uxtah", "nop"})


def disassemble(elf):
    """Every instruction of the ELF's code, by address."""
    code = {}
    line_re = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*\t(\S+)\s*([^@;]*)")
    for line in run(OBJDUMP + ["--disassemble", elf]).splitlines():
        match = line_re.match(line)
        if match:
            address = int(match.group(1), 16)
            size = len(match.group(2).split())
            code[address] = Instruction(address, size, match.group(3), match.group(4).strip())
    if not code:
        fail(f"no instructions in the disassembly of {elf}")
    return code


class Tally:
    """Instructions and cycles (best and worst case) of one traced solve, by class."""

    def __init__(self):
        self.instructions = Counter()
        self.best = Counter()
        self.worst = Counter()
        self.vdivs = 0
        self.fp_arithmetic = 0
        self.overlap = 0  # integer cycles hidden under a VDIV, best case only
        self.unknown = Counter()


def classify(ins):
    """The row of the table `ins` counts in."""
    if ins.base in FP_DIVIDES:
        return CLASSES[0]
    if ins.base in FP_ARITHMETIC or ins.base in FP_MULTIPLY_ADD:
        return CLASSES[1]
    if ins.writes_pc:
        return CLASSES[4]
    if (ins.single_transfer or ins.base in INTEGER_MULTIPLE_TRANSFERS
            or ins.base in FP_MULTIPLE_TRANSFERS):
        return CLASSES[3]
    if ins.fp:
        return CLASSES[2]
    return CLASSES[5]


def cycles(ins, previous, taken):
    """(best, worst) cycles of `ins` after `previous`; `taken`: the next PC is not the next
    instruction."""
    base = ins.base
    after_transfer = previous is not None and previous.single_transfer
    if ins.single_transfer and not ins.writes_pc:
        # Neighbouring single loads and stores pipeline (TRM, for integer ones); whether VLDR
        # and VSTR do is left to the range: the best case lets them, the worst does not.
        best = 1 if after_transfer else 2
        worst = 1 if after_transfer and not (ins.fp or previous.fp) else 2
        return best, worst
    if base in FP_DIVIDES:
        return DIVISION_CYCLES, DIVISION_CYCLES
    if base in FP_MULTIPLY_ADD:
        return 3, 3
    if base in FP_MULTIPLE_TRANSFERS:
        return 1 + ins.words(), 1 + ins.words()
    if base == "vmov" and ins.operands.count(",") >= 2:
        return 2, 2  # two core registers to or from two singles or a double
    if ins.fp:
        return 1, 1
    if ins.single_transfer:
        return 2 + REFILL_BEST, 2 + REFILL_WORST  # LDR to the PC
    if base in INTEGER_MULTIPLE_TRANSFERS:
        n = 1 + ins.words()
        return (n + REFILL_BEST, n + REFILL_WORST) if ins.writes_pc else (n, n)
    if base in ("tbb", "tbh"):
        return 2 + REFILL_BEST, 2 + REFILL_WORST
    if ins.writes_pc:
        return (1 + REFILL_BEST, 1 + REFILL_WORST) if taken else (1, 1)
    if base in INTEGER_DIVIDES:
        return 2, 12
    if base in IT_FORMS:
        return (0 if previous is not None and previous.size == 2 else 1), 1
    return 1, 1


def start_trace(elf, calibration):
    """Starts the firmware's trace mode under qemu; returns qemu and its execution log, a pipe
    read as qemu writes it (the log of the two solves is about 300 MB)."""
    start, size = calibration
    read_end, write_end = os.pipe()
    command = QEMU + [
        "-dfilter", f"0..{start - 1:#x},{start + size:#x}..0xffffffff",
        "-D", f"/proc/self/fd/{write_end}", "-kernel", elf,
    ]
    try:
        qemu = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(write_end,), text=True)
    except FileNotFoundError:
        fail("qemu-system-arm not found (.ci/run installs it)")
    os.close(write_end)
    return qemu, os.fdopen(read_end)


def analyse(log, code, mark_address):
    """Tallies each solve of the execution log `log`: the instructions from one entry of the
    marker to the next."""
    tallies = []
    current = None  # the tally of the solve in progress
    previous = None
    pending = None  # the last instruction, charged once the next PC shows whether it branched
    shadow = 0  # cycles left in the best case's VDIV overlap window
    for line in log:
        if not line.startswith("Trace"):
            continue
        pc = int(line.split("/", 2)[1], 16)
        if pending is not None:
            ins = pending
            best, worst = cycles(ins, previous, pc != ins.address + ins.size)
            kind = classify(ins)
            current.instructions[kind] += 1
            current.best[kind] += best
            current.worst[kind] += worst
            if ins.base in FP_DIVIDES:
                current.vdivs += 1
                shadow = DIVISION_CYCLES - 1
            elif ins.fp:
                shadow = 0
            elif shadow:
                hidden = min(shadow, best)
                current.overlap += hidden
                shadow -= hidden
            if ins.base in FP_ARITHMETIC or ins.base in FP_MULTIPLY_ADD:
                current.fp_arithmetic += 1
            if ins.base not in KNOWN:
                current.unknown[ins.base] += 1
            previous = ins
            pending = None
        if pc == mark_address:
            if current is None:
                current, previous, shadow = Tally(), None, 0
                tallies.append(current)
            else:
                current = None
        if current is not None:
            ins = code.get(pc)
            if ins is None:
                fail(f"the trace executed {pc:#x}, which the disassembly does not have")
            pending = ins
    return tallies


def main():
    if len(sys.argv) != 2:
        fail("usage: cycle_model.py ELF")
    elf = sys.argv[1]
    if not os.path.isfile(elf):
        fail(f"{elf} does not exist (core/firmware/cycles.sh builds it)")
    table = symbols(elf)
    if MARK not in table:
        fail(f"the marker {MARK} is not in the ELF's symbol table")
    mark_address = table[MARK][0]
    calibration = find_symbol(table, CALIBRATION)
    code = disassemble(elf)

    qemu, log = start_trace(elf, calibration)
    with log:
        tallies = analyse(log, code, mark_address)
    output = qemu.stdout.read()
    if qemu.wait() != 0:
        fail(f"the firmware's trace mode failed (qemu exit status {qemu.returncode}):\n{output}")
    reported = [(int(i), int(n)) for i, n in SOLVE_LINE.findall(output)]
    tick = TICK_LINE.search(output)
    if len(tallies) != 2 or [i for i, _ in reported] != list(TRACED_ITERATIONS) or not tick:
        fail(f"expected two traced solves of {TRACED_ITERATIONS} iterations, found "
             f"{len(tallies)} between calls of {MARK} in the execution log; the firmware "
             f"reported:\n{output}")
    per_tick = float(tick.group(1))
    unknown = tallies[0].unknown + tallies[1].unknown
    if unknown:
        fail(f"instructions the model has no timing for: {dict(unknown)}")

    span = TRACED_ITERATIONS[1] - TRACED_ITERATIONS[0]
    first, second = tallies

    def per_iteration(field):
        return (field(second) - field(first)) / span

    traced = per_iteration(lambda t: sum(t.instructions.values()))
    systick = (reported[1][1] - reported[0][1]) / span
    # Each SysTick count is exact to one tick, so their difference to two.
    tolerance = 2 * per_tick / span
    print(f"196x2 unbalanced solve (eps 0.1, gamma 0.8, tol 0), iterations "
          f"{TRACED_ITERATIONS[0] + 1}-{TRACED_ITERATIONS[1]}, per iteration")
    print(f"  instructions: {traced:,.1f} in the trace, {systick:,.1f} by the firmware's "
          f"SysTick count (+-{tolerance:.1f})")
    if abs(traced - systick) > tolerance:
        fail(f"the trace's {traced:.1f} instructions per iteration disagree with the "
             f"firmware's {systick:.1f}")

    rows = [(kind, per_iteration(lambda t, k=kind: t.instructions[k]),
             per_iteration(lambda t, k=kind: t.best[k]),
             per_iteration(lambda t, k=kind: t.worst[k])) for kind in CLASSES]
    overlap = per_iteration(lambda t: t.overlap)
    best = sum(r[2] for r in rows) - overlap
    worst = sum(r[3] for r in rows)
    print()
    print(f"  {'class':<36} {'instructions':>12} {'cycles best':>12} {'cycles worst':>12}")
    for kind, count, low, high in rows:
        print(f"  {kind:<36} {count:>12,.1f} {low:>12,.1f} {high:>12,.1f}")
    print(f"  {'integer work hidden under VDIV':<36} {'':>12} {-overlap:>12,.1f} {0:>12,.1f}")
    print(f"  {'total':<36} {traced:>12,.1f} {best:>12,.1f} {worst:>12,.1f}")
    print(f"  executed VDIV.F32/VSQRT.F32: {per_iteration(lambda t: t.vdivs):.2f}; "
          f"VADD/VSUB/VMUL/VMLA/VFMA: {per_iteration(lambda t: t.fp_arithmetic):,.1f}")

    floor = FLOOR_DIVISIONS * DIVISION_CYCLES + FLOOR_MULTIPLY_ADDS * MULTIPLY_ADD_CYCLES
    print()
    print(f"  floor: {FLOOR_DIVISIONS} divisions x {DIVISION_CYCLES} + {FLOOR_MULTIPLY_ADDS} "
          f"multiply-adds x {MULTIPLY_ADD_CYCLES} (VMUL + VADD) = {floor:,} cycles")
    print(f"  modelled / floor: {best / floor:.2f} (best case) to {worst / floor:.2f} "
          f"(worst case)")


if __name__ == "__main__":
    main()

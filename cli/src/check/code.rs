//! The size and byte order an optimised model passes to its loader, read
//! from its x86-64 code.
//!
//! At `-O1` and above the compiler folds onnx-mlir's internal constants
//! `om_external_constant_filesize` and `_isLE` into the instructions that
//! use them, and the symbols are gone. The values are still there: as the
//! third and fourth arguments (`rdx`, `rcx` in the System V ABI) of every
//! call to the loader. This follows each straight run of instructions from
//! a function's start or a branch target, with what it knows of the
//! registers (immediates moved, added, `lea`-offset, copied), to each call
//! of the loader, directly or through its PLT or GOT entry. The values are
//! believed only when every such call passes known, equal ones.

use std::collections::{HashMap, HashSet};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use object::{
    Architecture, Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget,
    SectionKind,
};

/// What the model's calls pass, where every call agrees.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arguments {
    /// The size, in bytes (`rdx`).
    pub(crate) size: Option<u64>,
    /// Non-zero for little-endian data (`rcx`).
    pub(crate) is_le: Option<bool>,
}

/// What one call passed: `rdx` and `rcx`, where known.
type Seen = (Option<u64>, Option<u64>);

/// The arguments of the model's calls to any of `functions`, on x86-64
/// ELF; `None` elsewhere or when no call is found.
pub(crate) fn loader_arguments(file: &object::File<'_>, functions: &[&str]) -> Option<Arguments> {
    if file.architecture() != Architecture::X86_64 || file.format() != object::BinaryFormat::Elf {
        return None;
    }
    let targets = call_targets(file, functions);
    if targets.is_empty() {
        return None;
    }
    let mut seen: Vec<Seen> = Vec::new();
    // The model's code; the PLT's stubs are the targets themselves.
    let code = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter(|s| !s.name().is_ok_and(|n| n.starts_with(".plt")));
    for section in code {
        let Ok(data) = section.data() else { continue };
        let starts = block_starts(file, section.address(), data);
        scan(data, section.address(), &targets, &starts, &mut seen);
    }
    if seen.is_empty() {
        return None;
    }
    let agreed = |pick: fn(&Seen) -> Option<u64>| {
        let first = pick(&seen[0])?;
        seen.iter().all(|s| pick(s) == Some(first)).then_some(first)
    };
    Some(Arguments {
        size: agreed(|s| s.0),
        is_le: agreed(|s| s.1).map(|v| v & 0xff != 0),
    })
}

/// The addresses a call to one of `functions` can go to: the function's
/// own (a direct call), its PLT stub, and its GOT slot (`call *slot(%rip)`,
/// as `-fno-plt` makes).
fn call_targets(file: &object::File<'_>, functions: &[&str]) -> HashSet<u64> {
    let mut out = HashSet::new();
    let named = |n: &[u8]| functions.iter().any(|f| f.as_bytes() == n);
    for s in file.symbols().chain(file.dynamic_symbols()) {
        if s.is_definition() && s.name_bytes().is_ok_and(named) {
            out.insert(s.address());
        }
    }
    let mut slots = HashSet::new();
    if let (Some(relocs), Some(table)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) {
        for (offset, r) in relocs {
            if let RelocationTarget::Symbol(i) = r.target() {
                if table
                    .symbol_by_index(i)
                    .and_then(|s| s.name_bytes())
                    .is_ok_and(named)
                {
                    slots.insert(offset);
                }
            }
        }
    }
    out.extend(slots.iter().copied());
    // PLT stubs: `jmp *slot(%rip)`, after an `endbr64` in IBT stubs.
    for section in file.sections() {
        let is_plt = section.name().is_ok_and(|n| n.starts_with(".plt"));
        let Ok(data) = section.data() else { continue };
        if !is_plt {
            continue;
        }
        let mut decoder = Decoder::with_ip(64, data, section.address(), DecoderOptions::NONE);
        let mut previous: Option<Instruction> = None;
        for ins in &mut decoder {
            if ins.mnemonic() == Mnemonic::Jmp
                && ins.is_ip_rel_memory_operand()
                && slots.contains(&ins.ip_rel_memory_address())
            {
                out.insert(ins.ip());
                if let Some(p) = previous.filter(|p| p.mnemonic() == Mnemonic::Endbr64) {
                    out.insert(p.ip());
                }
            }
            previous = Some(ins);
        }
    }
    out
}

/// Where a straight run starts: every function symbol in the section, and
/// every branch target inside it. What is known of the registers is
/// forgotten there, since another path may arrive.
fn block_starts(file: &object::File<'_>, base: u64, data: &[u8]) -> HashSet<u64> {
    let end = base + data.len() as u64;
    let mut out: HashSet<u64> = file
        .symbols()
        .map(|s| s.address())
        .filter(|a| (base..end).contains(a))
        .collect();
    for ins in Decoder::with_ip(64, data, base, DecoderOptions::NONE) {
        if matches!(
            ins.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && ins.op0_kind() == OpKind::NearBranch64
        {
            out.insert(ins.near_branch_target());
        }
    }
    out
}

/// Follows the code, recording `(rdx, rcx)` at each call of a target.
fn scan(
    data: &[u8],
    base: u64,
    targets: &HashSet<u64>,
    starts: &HashSet<u64>,
    seen: &mut Vec<Seen>,
) {
    let mut known: HashMap<Register, u64> = HashMap::new();
    let mut info = InstructionInfoFactory::new();
    for ins in Decoder::with_ip(64, data, base, DecoderOptions::NONE) {
        if starts.contains(&ins.ip()) {
            known.clear();
        }
        let flow = ins.flow_control();
        let calls_target = match flow {
            FlowControl::Call | FlowControl::UnconditionalBranch
                if ins.op0_kind() == OpKind::NearBranch64 =>
            {
                targets.contains(&ins.near_branch_target())
            }
            FlowControl::IndirectCall | FlowControl::IndirectBranch
                if ins.is_ip_rel_memory_operand() =>
            {
                targets.contains(&ins.ip_rel_memory_address())
            }
            _ => false,
        };
        if calls_target {
            seen.push((
                known.get(&Register::RDX).copied(),
                known.get(&Register::RCX).copied(),
            ));
        }
        let value = value_written(&ins, &known);
        for used in info.info(&ins).used_registers() {
            if matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::ReadWrite
                    | OpAccess::CondWrite
                    | OpAccess::ReadCondWrite
            ) {
                known.remove(&used.register().full_register());
            }
        }
        if let Some((reg, v)) = value {
            known.insert(reg, v);
        }
        match flow {
            FlowControl::Call | FlowControl::IndirectCall => {
                for r in [
                    Register::RAX,
                    Register::RCX,
                    Register::RDX,
                    Register::RSI,
                    Register::RDI,
                    Register::R8,
                    Register::R9,
                    Register::R10,
                    Register::R11,
                ] {
                    known.remove(&r);
                }
            }
            FlowControl::Return
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch => known.clear(),
            _ => {}
        }
    }
}

/// The full register `ins` sets to a known value, and that value: moves of
/// immediates and known registers, `lea` of a known base and a
/// displacement, adds and subtracts of immediates, `xor r, r`. Writes to a
/// 32-bit register zero the upper half; narrower writes are not followed.
fn value_written(ins: &Instruction, known: &HashMap<Register, u64>) -> Option<(Register, u64)> {
    if ins.op_count() < 1 || ins.op0_kind() != OpKind::Register {
        return None;
    }
    let dest = ins.op0_register();
    let width = if dest.is_gpr64() {
        64
    } else if dest.is_gpr32() {
        32
    } else {
        return None;
    };
    let full = dest.full_register();
    let source = |i: u32| -> Option<u64> {
        match ins.op_kind(i) {
            OpKind::Register => known.get(&ins.op_register(i).full_register()).copied(),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some(ins.immediate(i)),
            _ => None,
        }
    };
    let v = match ins.mnemonic() {
        Mnemonic::Mov if ins.op_count() == 2 => source(1)?,
        Mnemonic::Xor
            if ins.op_count() == 2
                && ins.op1_kind() == OpKind::Register
                && ins.op1_register() == dest =>
        {
            0
        }
        Mnemonic::Add if ins.op_count() == 2 => known.get(&full).copied()?.wrapping_add(source(1)?),
        Mnemonic::Sub if ins.op_count() == 2 => known.get(&full).copied()?.wrapping_sub(source(1)?),
        Mnemonic::Lea if ins.memory_index() == Register::None => {
            let base = match ins.memory_base() {
                Register::None => 0,
                Register::RIP => return None,
                b => known.get(&b.full_register()).copied()?,
            };
            base.wrapping_add(ins.memory_displacement64())
        }
        _ => return None,
    };
    Some((full, if width == 32 { v & 0xffff_ffff } else { v }))
}

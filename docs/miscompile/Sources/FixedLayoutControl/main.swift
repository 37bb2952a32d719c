// The control: MiscompileRepro with a State of fixed layout (no resilient member), so every
// field offset of Slots is a compile-time constant. Expected: RESULT: ok.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A final class whose layout is only known at run time: State holds a CheckedContinuation,
/// a resilient type of the _Concurrency module, so the offset of `state` is not a constant but
/// a global ("direct field offset") that the class's metadata accessor fills in the first time
/// the class is used. Until then the global holds 0.
final class Slots: Sendable {
    struct State {
        var inUse = 0
        var waiter: UnsafeMutableRawPointer?  // fixed layout: the offset of `state` is a constant
    }
    let capacity: Int
    let state = Mutex(State())
    init(capacity: Int) { self.capacity = capacity }
}

/// Reads the futex word of `slots.state` through the field offset (no call in between).
@inline(__always) func futexWord(of slots: Slots) -> UInt32 {
    withUnsafePointer(to: slots.state) { UnsafeRawPointer($0).load(as: UInt32.self) }
}

/// One path reads `state` of an existing Slots (a load of the field-offset global), the other
/// does not; both then create a Slots. LLVM's GVN makes the later load of the field-offset
/// global partially redundant and moves it into the other path, i.e. before the call to the
/// metadata accessor that initialises the global: it reads 0 when this is the first Slots.
@inline(never) func makeSlots(replacing old: Slots?, capacity: Int) -> Slots {
    if let old, futexWord(of: old) != 0 { fatalError("the old Slots is locked") }
    return Slots(capacity: capacity)
}

/// The machine word at `offset` bytes into `object`.
@inline(never) func word(_ object: AnyObject, at offset: Int) -> UInt {
    Unmanaged.passUnretained(object).toOpaque().load(fromByteOffset: offset, as: UInt.self)
}

func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// Prints a line unbuffered, so that it is out before a trap.
func say(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

// The first Slots of the process: its metadata is initialised inside makeSlots.
let slots = makeSlots(replacing: nil, capacity: 2)
// Heap object layout: metadata pointer at 0, reference counts at 8, capacity at 16, state at 24
// (state.handle, the futex word, first). The object is never released: with a clobbered header,
// releasing it could crash.
let metadata = word(slots, at: 0), expected = unsafeBitCast(Slots.self as AnyClass, to: UInt.self)
let futex = UInt32(truncatingIfNeeded: word(slots, at: 24))
say("metadata pointer \(hex(metadata)) (Slots: \(hex(expected))), futex word at +24: \(hex(futex))")
say(metadata == expected && futex == 0 ? "RESULT: ok" : "RESULT: miscompiled")
if CommandLine.arguments.contains("--lock") {
    // What llmq did next: lock it. A non-zero futex word that is not this thread's id makes
    // FUTEX_LOCK_PI fail with EPERM: "Unknown error occurred while attempting to acquire a Mutex".
    slots.state.withLock { $0.inUse += 1 }
    say("locked and unlocked")
}

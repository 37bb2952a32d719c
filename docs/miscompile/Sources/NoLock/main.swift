// MiscompileRepro without any lock: a plain `let` of a struct with a resilient member. The
// same misdirected stores happen, which shows that the miscompile is not about Mutex: it hits
// any stored property whose offset is a runtime global. Expected (Swift 6.3.1): RESULT: miscompiled.
#if canImport(Glibc)
import Glibc
#endif

final class Slots {
    struct State {
        var inUse = 0
        var waiter: CheckedContinuation<Void, Never>?
    }
    let capacity: Int
    let state = State()
    init(capacity: Int) { self.capacity = capacity }
}

/// One path reads `state.inUse` of an existing Slots (a load of the field-offset global), the
/// other does not; both then create a Slots.
@inline(never) func makeSlots(replacing old: Slots?, capacity: Int) -> Slots {
    if let old, old.state.inUse != 0 { fatalError("the old Slots is busy") }
    return Slots(capacity: capacity)
}

/// Never called; it makes a static link (--static-swift-stdlib) include CheckedContinuation's
/// type descriptor, which a type only named in a stored property does not pull in from
/// libswift_Concurrency.a (without it the runtime cannot instantiate State's metadata).
@inline(never) func resumeWaiter(of slots: Slots) { slots.state.waiter?.resume() }

/// The machine word at `offset` bytes into `object`.
@inline(never) func word(_ object: AnyObject, at offset: Int) -> UInt {
    Unmanaged.passUnretained(object).toOpaque().load(fromByteOffset: offset, as: UInt.self)
}

func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// Prints a line unbuffered.
func say(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

// The first Slots of the process. Layout: metadata pointer at 0, reference counts at 8,
// capacity at 16, state at 24 (state.inUse first). The object is never released: with a
// clobbered header, releasing it would crash.
let slots = makeSlots(replacing: nil, capacity: 2)
let metadata = word(slots, at: 0), expected = unsafeBitCast(Slots.self as AnyClass, to: UInt.self)
say("metadata pointer \(hex(metadata)) (Slots: \(hex(expected))), state.inUse at +24: \(hex(word(slots, at: 24)))")
say(metadata == expected ? "RESULT: ok" : "RESULT: miscompiled")
if CommandLine.arguments.count > 99 { resumeWaiter(of: slots) }

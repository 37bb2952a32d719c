import Synchronization
import Testing

/// What a test's scoped fixtures started (`.withRedis`, `.withSimulator(...)`, ...) and what the
/// test started inside them that must not outlive it (workers, processes), stopped in reverse
/// order when the test ends: passed, failed or thrown.
///
/// A fixture is a trait on the test (`@Test("...", .withRedis)`) whose scope wraps the test
/// function; the body, at function scope, reads what it started (`try RedisFixture.current`).
/// Test bodies are never moved into a fixture's closure: Swift 6.3.1 can give a plain closure in
/// such a body the symbol of an `#expect` argument's closure, and the test then checks the wrong
/// thing (docs/toolchain/closure-discriminator-collision.md).
public final class FixtureScope: Sendable {
    /// The scope of the test running in this task, if it has a fixture.
    @TaskLocal public static var current: FixtureScope?

    private struct State {
        var values: [ObjectIdentifier: any Sendable] = [:]
        var teardowns: [@Sendable () async throws -> Void] = []
        /// How many fixtures of each kind have been provided so far.
        var provided: [ObjectIdentifier: Int] = [:]
    }

    private let state = Mutex(State())

    init() {}

    /// Keeps `value` for the test to read with ``value(_:trait:)``: one value per type.
    public func store<Value: Sendable>(_ value: Value) {
        state.withLock { $0.values[ObjectIdentifier(Value.self)] = value }
    }

    /// Runs `teardown` when the test ends, before every teardown registered earlier.
    public func atEnd(_ teardown: @escaping @Sendable () async throws -> Void) {
        state.withLock { $0.teardowns.append(teardown) }
    }

    /// Registers `teardown` with the running test's scope; outside a fixture's scope the caller
    /// stops what it started itself.
    public static func atEnd(_ teardown: @escaping @Sendable () async throws -> Void) {
        current?.atEnd(teardown)
    }

    /// What the fixture `trait` stored for the running test.
    /// - Throws: When the test has no such fixture (a trait missing from its `@Test`).
    public static func value<Value: Sendable>(_ type: Value.Type, trait: String) throws -> Value {
        guard let value = current?.state.withLock({ $0.values[ObjectIdentifier(type)] }) as? Value else {
            throw TestFailure("this test has no \(trait) fixture: add it to the test's traits")
        }
        return value
    }

    /// The one value a fixture stored as a list of them (one simulator of `.withSimulator`).
    public static func one<Value: Sendable>(_ type: Value.Type, trait: String) throws -> Value {
        let values = try value([Value].self, trait: trait)
        guard values.count == 1 else { throw TestFailure("this test has \(values.count) of \(trait); read them with pair") }
        return values[0]
    }

    /// The two values a fixture stored as a list of them (two simulators of `.withSimulators`).
    public static func pair<Value: Sendable>(_ type: Value.Type, trait: String) throws -> (Value, Value) {
        let values = try value([Value].self, trait: trait)
        guard values.count == 2 else { throw TestFailure("this test has \(values.count) of \(trait), not two") }
        return (values[0], values[1])
    }

    /// Whether the fixture of kind `kind` now provided is the last of its kind among `test`'s
    /// traits (its suite's come first): only that one starts, so that a test's own
    /// `.withRedis(appendOnly: true)` takes the place of its suite's `.withRedis`.
    fileprivate func isLast<Kind: ScopedFixture>(_ kind: Kind.Type, of test: Test) -> Bool {
        let count = test.traits.filter { $0 is Kind }.count
        return state.withLock { state in
            state.provided[ObjectIdentifier(kind), default: 0] += 1
            return state.provided[ObjectIdentifier(kind), default: 0] >= count
        }
    }

    /// Runs every teardown, the latest first, each even when one before it failed; returns the
    /// first failure.
    fileprivate func tearDown() async -> (any Error)? {
        let teardowns = state.withLock { state in
            defer { state.teardowns.removeAll() }
            return state.teardowns
        }
        var failure: (any Error)?
        for teardown in teardowns.reversed() {
            do { try await teardown() } catch { failure = failure ?? error }
        }
        return failure
    }
}

/// A scoped fixture: a trait that starts something before a test (before each case of a
/// parameterized test; on a suite, before each of its tests) and stops it after, whatever the
/// test's outcome. Several on one test share one ``FixtureScope``; of two of a kind (the suite's
/// and the test's own), the test's own is the one started.
public protocol ScopedFixture: TestTrait, SuiteTrait, TestScoping {
    /// Starts what the fixture provides, ``FixtureScope/store(_:)``s it for the test and
    /// registers how it stops (``FixtureScope/atEnd(_:)``).
    func start(in scope: FixtureScope) async throws
}

extension ScopedFixture {
    /// On a suite, each test gets a fixture of its own.
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        if let scope = FixtureScope.current {
            // Another fixture of this test opened the scope; it stops everything at the end.
            if scope.isLast(Self.self, of: test) { try await start(in: scope) }
            try await function()
            return
        }
        let scope = FixtureScope()
        var failure: (any Error)?
        do {
            try await FixtureScope.$current.withValue(scope) {
                if scope.isLast(Self.self, of: test) { try await start(in: scope) }
                try await function()
            }
        } catch {
            failure = error
        }
        let teardownFailure = await scope.tearDown()
        if let error = failure ?? teardownFailure { throw error }
    }
}

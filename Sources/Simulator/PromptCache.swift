/// What the prompt cache needs to know about one request.
struct CacheRequest: Sendable {
    /// The rendered prompt (see ``PromptTokens``).
    var prompt: [PromptToken]
    /// What the slot holds after the prompt once the reply is generated: the assistant header and its words.
    var reply: [PromptToken]
    /// llama-server's `cache_prompt`: false computes the whole prompt again.
    var reuse: Bool = true
    /// llama-server's `id_slot`: the slot to use if it is free.
    var preferredSlot: Int?
}

/// llama-server's prompt caching as a pure state machine: the tokens each slot last processed, and a bounded
/// host-memory cache of earlier slot contents (`--cache-ram`).
///
/// A request is given the free slot whose tokens share the longest prefix with its prompt (ties, and slots that
/// would lose more than half their tokens: the least recently used slot, then the lowest id), or the slot it
/// names with `id_slot` when that one is free. Its cached tokens are the longest common prefix found in that
/// slot or in any RAM entry, less one: like llama-server, the last prompt token is always computed again, to
/// get the logits of the first generated token. When the
/// request would overwrite part of what the slot held (another conversation, or an edited one), the slot's old
/// tokens move to the RAM cache first, where the least recently used entry makes room.
///
/// `SimulatorState` calls it under its lock, so choosing a slot and loading it are one step.
struct PromptCache: Sendable {
    /// The tokens a slot holds and when it was last given a request.
    private struct Slot: Sendable {
        var tokens: [PromptToken] = []
        var lastUsed: UInt64 = 0
    }

    /// One sequence kept in RAM and when it was last stored or restored.
    private struct Entry: Sendable {
        var tokens: [PromptToken]
        var lastUsed: UInt64
    }

    private var slots: [Slot]
    private var ram: [Entry] = []
    /// Most entries the RAM cache keeps; 0 keeps none.
    let ramCapacity: Int
    /// Counts loads, so "least recently used" needs no wall clock.
    private var clock: UInt64 = 0

    /// An empty cache for `slots` slots and up to `ramEntries` RAM entries.
    init(slots: Int, ramEntries: Int) {
        self.slots = Array(repeating: Slot(), count: max(slots, 0))
        self.ramCapacity = max(ramEntries, 0)
    }

    /// Tokens each slot holds now, by slot id.
    var slotTokenCounts: [Int] { slots.map(\.tokens.count) }

    /// Sequences in the RAM cache now.
    var ramEntryCount: Int { ram.count }

    /// The free slot a request goes to: the one it names, if free; else the one sharing the longest prefix with
    /// its prompt among those that would keep at least half of what they hold; else the least recently used,
    /// then the lowest id. Nil only when `free` is empty.
    ///
    /// The "half" keeps one shared template token or system prompt from drawing a new conversation into a slot
    /// that holds another one while an empty or stale slot is free; it is llama-server's threshold for keeping
    /// a slot's tokens rather than saving them to RAM.
    func choose(among free: [Int], for request: CacheRequest) -> Int? {
        if let preferred = request.preferredSlot, free.contains(preferred) {
            return preferred
        }
        var best: (slot: Int, prefix: Int, lastUsed: UInt64)?
        for slot in free where slots.indices.contains(slot) {
            let tokens = slots[slot].tokens
            var prefix = Self.commonPrefix(tokens, request.prompt)
            if prefix * 2 < tokens.count {
                prefix = 0
            }
            let lastUsed = slots[slot].lastUsed
            if let current = best {
                let better =
                    prefix != current.prefix
                    ? prefix > current.prefix
                    : (lastUsed, slot) < (current.lastUsed, current.slot)
                if !better { continue }
            }
            best = (slot, prefix, lastUsed)
        }
        return best?.slot
    }

    /// Gives `slot` to the request and returns how many of its prompt tokens are cached; afterwards the slot holds
    /// the prompt and the reply.
    mutating func load(_ request: CacheRequest, into slot: Int) -> Int {
        guard slots.indices.contains(slot) else { return 0 }
        clock += 1
        let old = slots[slot].tokens
        var best = Self.commonPrefix(old, request.prompt)
        if request.reuse {
            var restored: Int?
            for index in ram.indices {
                let prefix = Self.commonPrefix(ram[index].tokens, request.prompt)
                if prefix > best {
                    best = prefix
                    restored = index
                }
            }
            if let restored {
                ram[restored].lastUsed = clock
            }
        }
        if !Self.isPrefix(old, of: request.prompt, then: request.reply) {
            save(old)
        }
        slots[slot].tokens = request.prompt + request.reply
        slots[slot].lastUsed = clock
        guard request.reuse else { return 0 }
        return max(0, min(best, request.prompt.count - 1))
    }

    /// Keeps `tokens` in RAM unless an entry already holds them; entries they extend are dropped as redundant.
    private mutating func save(_ tokens: [PromptToken]) {
        guard ramCapacity > 0, !tokens.isEmpty else { return }
        if let holder = ram.firstIndex(where: { Self.isPrefix(tokens, of: $0.tokens, then: []) }) {
            ram[holder].lastUsed = clock
            return
        }
        ram.removeAll { Self.isPrefix($0.tokens, of: tokens, then: []) }
        ram.append(Entry(tokens: tokens, lastUsed: clock))
        while ram.count > ramCapacity {
            guard let oldest = ram.indices.min(by: { ram[$0].lastUsed < ram[$1].lastUsed }) else { break }
            ram.remove(at: oldest)
        }
    }

    /// Length of the longest common prefix of two sequences.
    static func commonPrefix(_ first: [PromptToken], _ second: [PromptToken]) -> Int {
        let limit = min(first.count, second.count)
        var index = 0
        while index < limit && first[index] == second[index] {
            index += 1
        }
        return index
    }

    /// Whether `tokens` is a prefix of `head` followed by `tail`, without joining them.
    static func isPrefix(_ tokens: [PromptToken], of head: [PromptToken], then tail: [PromptToken]) -> Bool {
        guard tokens.count <= head.count + tail.count else { return false }
        let inHead = min(tokens.count, head.count)
        guard commonPrefix(tokens, head) >= inHead else { return false }
        var index = inHead
        while index < tokens.count {
            if tokens[index] != tail[index - head.count] { return false }
            index += 1
        }
        return true
    }
}

import Configuration

/// Typed reads of the keys under one prefix, as swift-configuration's `ConfigReader.scoped(to:)`
/// reads them: `scoped(to: "redis").whole("waitReplicas")` reads `redis.waitReplicas`. Each
/// read checks the value against the key's entry in ``ConfigurationKey/all`` (its range, its
/// choices), so a range is written once, in the registry.
struct ConfigurationScope {
    let reading: ConfigurationReading
    /// `redis`, `backends[1]`, or empty for the top level.
    let prefix: String

    /// The full key of `name` under this scope.
    func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "." + name }

    func scoped(to name: String) -> ConfigurationScope { ConfigurationScope(reading: reading, prefix: key(name)) }

    func error(_ name: String, _ problem: String) -> ConfigurationError { reading.error(key(name), problem) }

    func source(_ name: String) -> ConfigurationSource? { reading.sources[key(name)] }

    func has(_ name: String) -> Bool { reading.has(key(name)) }

    /// Text, as it is.
    func text(_ name: String) throws(ConfigurationError) -> String? {
        guard case .string(let text)? = try reading.find(key(name), .string) else { return nil }
        return text
    }

    /// Text that must not be empty.
    func name(_ name: String) throws(ConfigurationError) -> String? {
        guard let text = try text(name) else { return nil }
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw error(name, "must not be empty") }
        return text
    }

    /// A whole number in the key's range.
    func whole(_ name: String) throws(ConfigurationError) -> Int? {
        guard case .whole(let range) = ConfigurationKey.declared(key(name)).values else { preconditionFailure("\(key(name)) is not whole") }
        guard case .int(let number)? = try reading.find(key(name), .int) else { return nil }
        guard range.contains(number) else {
            throw error(name, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    /// A number in the key's range, or at least its minimum.
    func number(_ name: String) throws(ConfigurationError) -> Double? {
        switch ConfigurationKey.declared(key(name)).values {
        case .number(let range), .duration(let range, _): return try number(name, in: range)
        case .numberAtLeast(let minimum): return try number(name, atLeast: minimum)
        default: preconditionFailure("\(key(name)) is not a number")
        }
    }

    private func number(_ name: String, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
        guard case .double(let number)? = try reading.find(key(name), .double) else { return nil }
        guard number.isFinite else { throw error(name, "expected a number, got \(number)") }
        guard range.contains(number) else {
            throw error(name, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    private func number(_ name: String, atLeast minimum: Double) throws(ConfigurationError) -> Double? {
        let expecting = "a number >= \(LoadedConfiguration.number(minimum))"
        guard case .double(let number)? = try reading.find(key(name), .double, expecting: expecting) else { return nil }
        guard number.isFinite, number >= minimum else {
            throw error(name, "expected \(expecting), got \(LoadedConfiguration.number(number))")
        }
        return number
    }

    /// A duration, from seconds or milliseconds as the key's unit says.
    func duration(_ name: String) throws(ConfigurationError) -> Duration? {
        guard case .duration(_, let unit) = ConfigurationKey.declared(key(name)).values else { preconditionFailure("\(key(name)) is no duration") }
        guard let number = try number(name) else { return nil }
        return .milliseconds(Int64((number * unit * 1000).rounded()))
    }

    func bool(_ name: String) throws(ConfigurationError) -> Bool? {
        guard case .bool = ConfigurationKey.declared(key(name)).values else { preconditionFailure("\(key(name)) is not true or false") }
        guard case .bool(let flag)? = try reading.find(key(name), .bool) else { return nil }
        return flag
    }

    /// Comma-separated text (or a list) as its items.
    func list(_ name: String) throws(ConfigurationError) -> [String]? {
        switch ConfigurationKey.declared(key(name)).values {
        case .list, .structured: break
        default: preconditionFailure("\(key(name)) is not a list")
        }
        guard case .stringArray(let list)? = try reading.find(key(name), .stringArray) else { return nil }
        return list
    }

    /// One of the key's choices, in any case, as the value `options` gives it.
    func choice<T>(_ name: String, _ options: (String) -> T?) throws(ConfigurationError) -> T? {
        guard case .choice(let names) = ConfigurationKey.declared(key(name)).values else { preconditionFailure("\(key(name)) is no choice") }
        guard let text = try text(name) else { return nil }
        let normalized = text.trimmingCharacters(in: .whitespaces).lowercased()
        if names.contains(normalized), let value = options(normalized) { return value }
        throw error(name, "\"\(text)\" is not one of \(names.joined(separator: ", "))")
    }

    // MARK: Setting a field when its key is set

    /// Sets `field` to the key's value when the key is set: a whole number.
    func update(_ field: inout Int, _ name: String) throws(ConfigurationError) {
        if let value = try whole(name) { field = value }
    }

    /// Sets `field` to the key's value when the key is set: a number.
    func update(_ field: inout Double, _ name: String) throws(ConfigurationError) {
        if let value = try number(name) { field = value }
    }

    /// Sets `field` to the key's value when the key is set: seconds or milliseconds.
    func update(_ field: inout Duration, _ name: String) throws(ConfigurationError) {
        if let value = try duration(name) { field = value }
    }

    /// Sets `field` to the key's value when the key is set: true or false.
    func update(_ field: inout Bool, _ name: String) throws(ConfigurationError) {
        if let value = try bool(name) { field = value }
    }

    /// Sets `field` to the key's value when the key is set: text, not empty when the registry
    /// says it is a name.
    func update(_ field: inout String, _ name: String) throws(ConfigurationError) {
        if let value = try declaredText(name) { field = value }
    }

    /// Sets `field` to the key's text when the key is set, as the update of a `String` does.
    func update(_ field: inout String?, _ name: String) throws(ConfigurationError) {
        if let value = try declaredText(name) { field = value }
    }

    private func declaredText(_ name: String) throws(ConfigurationError) -> String? {
        switch ConfigurationKey.declared(key(name)).values {
        case .name: try self.name(name)
        case .text: try text(name)
        default: preconditionFailure("\(key(name)) is not text")
        }
    }
}

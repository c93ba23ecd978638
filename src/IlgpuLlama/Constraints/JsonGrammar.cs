using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using IlgpuLlama.Text;

namespace IlgpuLlama.Constraints;

/// <summary>
/// The JSON texts a generation may produce: a JSON schema (the subset below) or any JSON object,
/// compiled once into the grammar nodes a <see cref="JsonConstraint"/> walks byte by byte. Immutable
/// and independent of the vocabulary, so one grammar may serve many requests at once.
/// </summary>
/// <remarks>
/// <para>Supported keywords: <c>type</c> (object, array, string, number, integer, boolean, null, or an
/// array of them), <c>properties</c>, <c>required</c>, <c>additionalProperties</c> (false, true or a
/// schema), <c>items</c> (one schema), <c>enum</c>, <c>const</c>. The annotations <c>title</c>,
/// <c>description</c>, <c>$schema</c>, <c>$id</c>, <c>$comment</c>, <c>default</c>, <c>examples</c>,
/// <c>deprecated</c>, <c>readOnly</c>, <c>writeOnly</c> are accepted and ignored (they do not restrict
/// the instance). Any other keyword throws <see cref="UnsupportedSchemaException"/> naming all of them.</para>
/// <para>The output is compact (no whitespace outside strings). An object with <c>properties</c>
/// writes them in the schema's order, required ones always, optional ones when the model chooses;
/// extra properties are never written (valid whether or not additionalProperties allows them); names in
/// <c>required</c> that <c>properties</c> does not list get any JSON value. An object without
/// <c>properties</c> takes any keys (no duplicates) with values of its additionalProperties schema
/// (any value when absent or true; none when false). Numbers follow the JSON grammar with at most
/// 15 integer digits, 15 fraction digits and 2 exponent digits; integers have no fraction or
/// exponent. Strings are valid UTF-8 with valid escapes (no \u escape of a surrogate).</para>
/// </remarks>
public sealed class JsonGrammar
{
    /// <summary>Keywords that restrict the output.</summary>
    public static IReadOnlyList<string> SupportedKeywords { get; } = ["type", "properties", "required", "additionalProperties", "items", "enum", "const"];

    /// <summary>Annotation keywords accepted and ignored.</summary>
    public static IReadOnlyList<string> IgnoredKeywords { get; } =
        ["title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly"];

    JsonGrammar(GrammarNode root, bool orText = false)
    {
        Root = root;
        OrText = orText;
    }

    internal GrammarNode Root { get; }

    /// <summary>
    /// Whether the reply may instead be text: a reply whose first character other than white space is
    /// <c>{</c> must be a JSON text of the grammar, any other reply is free (a tool call under
    /// <c>tool_choice: auto</c>, constrained only once the model begins one: <see cref="ForToolCallOrText"/>).
    /// </summary>
    public bool OrText { get; }

    /// <summary>Bytes of the shortest output: generation needs at least this many new tokens (one byte per token is always possible); 0 when the reply may be text.</summary>
    public int MinBytes => OrText ? 0 : Root.MinBytes;

    /// <summary>Any JSON object (OpenAI's <c>{"type": "json_object"}</c>).</summary>
    public static JsonGrammar AnyObject { get; } = new(GrammarNode.FreeObject(GrammarNode.Any));

    /// <summary>Any JSON value.</summary>
    public static JsonGrammar AnyValue { get; } = new(GrammarNode.Any);

    /// <summary>Compiles a JSON schema given as text.</summary>
    /// <exception cref="JsonSchemaException">the text is not JSON or not a usable schema</exception>
    /// <exception cref="UnsupportedSchemaException">it uses keywords outside the supported subset</exception>
    public static JsonGrammar FromSchema(string schemaJson)
    {
        ArgumentNullException.ThrowIfNull(schemaJson);
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(schemaJson);
        }
        catch (JsonException e)
        {
            // One line: the parser's message may quote text with line breaks, and its last advice is for programmers.
            string message = string.Join(" ", e.Message.Replace(" Change the reader options.", "").Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            throw new JsonSchemaException($"the schema is not valid JSON: {message}", e);
        }
        return FromSchema(node);
    }

    /// <summary>Compiles a JSON schema held in a parsed document (a request body's <c>json_schema.schema</c>).</summary>
    /// <exception cref="JsonSchemaException">it is not a usable schema</exception>
    /// <exception cref="UnsupportedSchemaException">it uses keywords outside the supported subset</exception>
    public static JsonGrammar FromSchema(JsonElement schema) => FromSchema(JsonNode.Parse(schema.GetRawText()));

    /// <summary>
    /// A reply that is a call of one of <paramref name="tools"/> in the Llama 3 template's format,
    /// compact: <c>{"name":NAME,"parameters":{...}}</c> (<see cref="ToolCallFormat.Parse"/> reads it),
    /// the parameters following the named function's own schema: the name is read first, then the
    /// schema it chose (a tagged union). A function without a parameters schema takes <c>{}</c>; one
    /// whose schema is not an object schema, or uses keywords outside the supported subset, takes any
    /// parameters object (<see cref="ParametersSupported"/> tells which).
    /// </summary>
    public static JsonGrammar ForToolCall(IReadOnlyList<ChatTool> tools) => new(ToolCallNode(tools));

    /// <summary>
    /// A reply that is either a call of one of <paramref name="tools"/> (as <see cref="ForToolCall"/>)
    /// or text: free until its first character other than white space, then a call if that is
    /// <c>{</c> (constrained from there, as llama.cpp's lazy grammars are), else text to the end
    /// (<c>tool_choice: auto</c>).
    /// </summary>
    public static JsonGrammar ForToolCallOrText(IReadOnlyList<ChatTool> tools) => new(ToolCallNode(tools), orText: true);

    /// <summary>
    /// Whether <paramref name="tool"/>'s call is constrained to its own parameters schema (or to <c>{}</c>
    /// without one); false: it is an object schema the grammar cannot take (the call's parameters are then
    /// any object), with <paramref name="why"/> saying what it uses.
    /// </summary>
    public static bool ParametersSupported(ChatTool tool, out string? why)
    {
        ArgumentNullException.ThrowIfNull(tool);
        return ParametersGrammar(tool, out why) is not null;
    }

    static GrammarNode ToolCallNode(IReadOnlyList<ChatTool> tools)
    {
        ArgumentNullException.ThrowIfNull(tools);
        if (tools.Count == 0)
            throw new ArgumentException("a tool call needs at least one tool", nameof(tools));
        var prefixes = new List<byte[]>();
        var parameters = new List<GrammarNode>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tool in tools)
        {
            if (!seen.Add(tool.Name))
                continue; // a repeated name: the first definition's schema (one prefix per name)
            prefixes.Add(Encoding.UTF8.GetBytes($$"""{"name":{{JsonSerializer.Serialize(tool.Name)}},"parameters":"""));
            parameters.Add(ParametersNode(tool));
        }
        return GrammarNode.Tagged(prefixes, parameters, (byte)'}');
    }

    /// <summary>
    /// A function's parameters: none (<c>{}</c>) when it has no parameters schema (OpenAI: an empty
    /// parameter list); its object schema; else (not an object schema, keywords outside the subset) any object.
    /// </summary>
    static GrammarNode ParametersNode(ChatTool tool) => ParametersGrammar(tool, out _) ?? GrammarNode.FreeObject(GrammarNode.Any);

    /// <summary>The node of a function's parameters: <c>{}</c> without a schema, its object schema's, or null (with why) when the grammar cannot take it.</summary>
    static GrammarNode? ParametersGrammar(ChatTool tool, out string? why)
    {
        why = null;
        if (tool.Parameters is not { } schema)
            return GrammarNode.Object([]);
        try
        {
            var root = FromSchema(schema).Root;
            if (root.Kind is NodeKind.Object or NodeKind.FreeObject)
                return root;
            why = "the parameters schema does not describe an object ({\"type\": \"object\", \"properties\": {...}})";
        }
        catch (JsonSchemaException e)
        {
            why = e.Message; // keywords the grammar does not take: the call is still a call, its parameters any object
        }
        return null;
    }

    /// <summary>Compiles a JSON schema (an object or a boolean).</summary>
    /// <exception cref="JsonSchemaException">it is not a usable schema</exception>
    /// <exception cref="UnsupportedSchemaException">it uses keywords outside the supported subset</exception>
    public static JsonGrammar FromSchema(JsonNode? schema)
    {
        var unsupported = new List<string>();
        Collect(schema, "", unsupported);
        if (unsupported.Count > 0)
            throw new UnsupportedSchemaException(unsupported);
        return new JsonGrammar(Compile(schema, ""));
    }

    /// <summary>Every keyword outside the subset, anywhere in the schema (only places the subset descends into are searched).</summary>
    static void Collect(JsonNode? schema, string at, List<string> unsupported)
    {
        if (schema is not JsonObject o)
            return;
        foreach (var (key, value) in o)
        {
            string path = $"{at}/{Escape(key)}";
            if (key == "properties" && value is JsonObject props)
            {
                foreach (var (name, sub) in props)
                    Collect(sub, $"{path}/{Escape(name)}", unsupported);
            }
            else if (key is "items" or "additionalProperties")
                Collect(value, path, unsupported);
            else if (!SupportedKeywords.Contains(key) && !IgnoredKeywords.Contains(key))
                unsupported.Add($"{key} (at {(at.Length == 0 ? "/" : at)})");
        }
    }

    static string Escape(string key) => key.Replace("~", "~0").Replace("/", "~1");

    static JsonSchemaException Malformed(string at, string what) => new($"invalid JSON schema at {(at.Length == 0 ? "/" : at)}: {what}");

    static readonly string[] TypeNames = ["object", "array", "string", "number", "integer", "boolean", "null"];

    static GrammarNode Compile(JsonNode? schema, string at)
    {
        if (schema is JsonValue v && v.TryGetValue(out bool b))
            return b ? GrammarNode.Any : throw Malformed(at, "the schema false accepts no value");
        if (schema is not JsonObject o)
            throw Malformed(at, $"a schema must be an object or a boolean, got {Kind(schema)}");

        // The types allowed: from "type", else what the structural keywords imply, else any.
        HashSet<string>? types = null;
        if (o["type"] is JsonNode t)
        {
            types = [];
            List<JsonNode?> names = t is JsonArray a ? [.. a] : [t];
            foreach (var n in names)
            {
                if (n is not JsonValue nv || !nv.TryGetValue(out string? name) || !TypeNames.Contains(name))
                    throw Malformed(at + "/type", $"type must be one of {string.Join(", ", TypeNames)} or an array of them, got {n?.ToJsonString() ?? "null"}");
                types.Add(name);
            }
            if (types.Count == 0)
                throw Malformed(at + "/type", "an empty type array accepts no value");
        }

        if (o.ContainsKey("enum") || o.ContainsKey("const"))
            return CompileEnum(o, at, types);

        if (types is null)
        {
            if (o.ContainsKey("properties") || o.ContainsKey("required") || o.ContainsKey("additionalProperties"))
                types = ["object"];
            else if (o.ContainsKey("items"))
                types = ["array"];
            else
                return GrammarNode.Any;
        }

        var alternatives = new List<GrammarNode>();
        if (types.Contains("object"))
            alternatives.Add(CompileObject(o, at));
        if (types.Contains("array"))
            alternatives.Add(GrammarNode.Array(o["items"] is JsonNode items ? CompileItems(items, at + "/items") : GrammarNode.Any));
        if (types.Contains("string"))
            alternatives.Add(GrammarNode.String);
        if (types.Contains("number"))
            alternatives.Add(GrammarNode.Number);
        else if (types.Contains("integer"))
            alternatives.Add(GrammarNode.Integer);
        var literals = new List<byte[]>();
        if (types.Contains("boolean"))
            literals.AddRange([Encoding.ASCII.GetBytes("true"), Encoding.ASCII.GetBytes("false")]);
        if (types.Contains("null"))
            literals.Add(Encoding.ASCII.GetBytes("null"));
        if (literals.Count > 0)
            alternatives.Add(GrammarNode.Enum(literals));
        return alternatives.Count == 1 ? alternatives[0] : GrammarNode.Union(alternatives);
    }

    static GrammarNode CompileItems(JsonNode items, string at)
    {
        if (items is JsonValue iv && iv.TryGetValue(out bool allowed) && !allowed)
            throw Malformed(at, "items: false (an array that must stay empty) is not supported; leave items out or give the items' schema");
        if (items is JsonArray)
            throw Malformed(at, "items must be one schema (tuple items, an array of schemas, are not supported)");
        return Compile(items, at);
    }

    static GrammarNode CompileEnum(JsonObject o, string at, HashSet<string>? types)
    {
        var values = new List<JsonNode?>();
        if (o.TryGetPropertyValue("const", out var c))
            values.Add(c);
        if (o.TryGetPropertyValue("enum", out var e))
        {
            if (e is not JsonArray list || list.Count == 0)
                throw Malformed(at + "/enum", "enum must be a non-empty array");
            if (o.ContainsKey("const"))
                values = list.Where(x => JsonNode.DeepEquals(x, c)).ToList();
            else
                values.AddRange(list);
        }
        if (types is not null)
            values = values.Where(x => types.Contains(TypeOf(x)) || (TypeOf(x) == "integer" && types.Contains("number"))).ToList();
        if (values.Count == 0)
            throw Malformed(at, "no value of enum/const satisfies the rest of the schema");
        var encodings = values.Select(x => Encoding.UTF8.GetBytes(x?.ToJsonString() ?? "null")).ToList();
        return GrammarNode.Enum(encodings);
    }

    static string TypeOf(JsonNode? x) => x switch
    {
        null => "null",
        JsonObject => "object",
        JsonArray => "array",
        JsonValue v when v.GetValueKind() == JsonValueKind.String => "string",
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.TryGetValue(out decimal d) && d == decimal.Truncate(d) ? "integer" : "number",
        _ => "null",
    };

    static string Kind(JsonNode? x) => x is null ? "null" : TypeOf(x);

    static GrammarNode CompileObject(JsonObject o, string at)
    {
        var required = new List<string>();
        if (o["required"] is JsonNode r)
        {
            if (r is not JsonArray ra)
                throw Malformed(at + "/required", "required must be an array of property names");
            foreach (var n in ra)
            {
                if (n is not JsonValue nv || !nv.TryGetValue(out string? name))
                    throw Malformed(at + "/required", $"required must hold strings, got {n?.ToJsonString() ?? "null"}");
                if (!required.Contains(name))
                    required.Add(name);
            }
        }
        bool additionalFalse = false;
        GrammarNode additional = GrammarNode.Any;
        if (o.TryGetPropertyValue("additionalProperties", out var ap))
        {
            if (ap is JsonValue apv && apv.TryGetValue(out bool allowed))
                additionalFalse = !allowed;
            else
                additional = Compile(ap, at + "/additionalProperties");
        }

        var properties = new List<GrammarProperty>();
        bool dropped = false;
        if (o["properties"] is JsonNode p)
        {
            if (p is not JsonObject props)
                throw Malformed(at + "/properties", "properties must be an object of schemas");
            foreach (var (name, sub) in props)
            {
                if (sub is JsonValue sv && sv.TryGetValue(out bool allowed) && !allowed)
                {
                    // A property whose schema is false must be absent: it is never written.
                    if (required.Contains(name))
                        throw Malformed($"{at}/properties/{Escape(name)}", $"property \"{name}\" is required, and its schema false accepts no value");
                    dropped = true;
                    continue;
                }
                properties.Add(new GrammarProperty(name, Compile(sub, $"{at}/properties/{Escape(name)}"), required.Contains(name)));
            }
        }
        foreach (var name in required.Where(n => properties.All(q => q.Name != n)))
        {
            if (additionalFalse)
                throw Malformed(at + "/required", $"required property \"{name}\" is not in properties and additionalProperties is false");
            properties.Add(new GrammarProperty(name, additional, true));
        }
        // Listed properties are written in order and nothing else; so is none when every listed one is
        // false (a free object could write the forbidden names).
        if (properties.Count > 0 || dropped)
            return GrammarNode.Object(properties);
        return additionalFalse ? GrammarNode.Object([]) : GrammarNode.FreeObject(additional);
    }
}

/// <summary>One property of an object node: its name, the schema of its value, whether it must appear.</summary>
internal sealed record GrammarProperty(string Name, GrammarNode Value, bool Required);

internal enum NodeKind : byte
{
    /// <summary>An object with listed properties, written in order.</summary>
    Object,

    /// <summary>An object with any keys (distinct) whose values follow one node.</summary>
    FreeObject,
    Array,
    String,
    Number,
    Integer,

    /// <summary>One of a fixed set of JSON texts (enum, const, true/false, null).</summary>
    Enum,

    /// <summary>Alternatives told apart by their first byte.</summary>
    Union,

    /// <summary>
    /// A tagged union: one of several literal prefixes (none a prefix of another), then the value node
    /// that prefix chose, then one closing byte (a tool call: the name picks the parameters schema).
    /// </summary>
    Tagged,
}

/// <summary>A compiled schema node, with the precomputed minimum bytes the automaton's termination rule needs.</summary>
internal sealed class GrammarNode
{
    NodeKind kind;

    GrammarNode(NodeKind kind) => this.kind = kind;

    public NodeKind Kind => kind;

    /// <summary>Bytes of the shortest text of this node.</summary>
    public int MinBytes { get; private set; }

    /// <summary>FreeObject: the value node; Array: the item node.</summary>
    public GrammarNode? Element { get; private set; }

    public GrammarProperty[] Properties { get; private set; } = [];

    /// <summary>Object: the trie of the property names as written after the opening quote (JSON-escaped, closing quote included).</summary>
    public ByteTrie? Keys { get; private set; }

    /// <summary>Object: the minimum bytes left (commas, required properties, closing brace) after a property, the next candidate being index a.</summary>
    public int[] AfterValueCost { get; private set; } = [];

    /// <summary>Object: the minimum bytes left after a comma, the next candidate being index a (int.MaxValue: no candidate).</summary>
    public int[] AfterCommaCost { get; private set; } = [];

    /// <summary>Object: the last property that may come next when the next candidate is index a (the first required one at or after a, else the last).</summary>
    public int[] LastCandidate { get; private set; } = [];

    /// <summary>Object: the minimum bytes left just after the opening brace.</summary>
    public int StartCost { get; private set; }

    /// <summary>Enum: the trie of the literal texts.</summary>
    public ByteTrie? Literals { get; private set; }

    /// <summary>Union: the alternative each first byte starts (null: none).</summary>
    public GrammarNode?[]? ByFirstByte { get; private set; }

    /// <summary>Tagged: the value node after each prefix (by the prefix's index in <see cref="Literals"/>).</summary>
    public GrammarNode[] Continuations { get; private set; } = [];

    /// <summary>Tagged: the byte that closes it after the value.</summary>
    public byte Closing { get; private set; }

    /// <summary>Tagged: the minimum bytes left at each node of the prefix trie (rest of a prefix below it, its value, the closing byte).</summary>
    public int[] PrefixCost { get; private set; } = [];

    public static GrammarNode String { get; } = new(NodeKind.String) { MinBytes = 2 };

    public static GrammarNode Number { get; } = new(NodeKind.Number) { MinBytes = 1 };

    public static GrammarNode Integer { get; } = new(NodeKind.Integer) { MinBytes = 1 };

    /// <summary>Any JSON value (its object and array alternatives contain it again).</summary>
    public static GrammarNode Any { get; } = MakeAny();

    static GrammarNode MakeAny()
    {
        var any = new GrammarNode(NodeKind.Union) { MinBytes = 1 };
        var obj = new GrammarNode(NodeKind.FreeObject) { Element = any, MinBytes = 2 };
        var arr = new GrammarNode(NodeKind.Array) { Element = any, MinBytes = 2 };
        var literals = Enum([Encoding.ASCII.GetBytes("true"), Encoding.ASCII.GetBytes("false"), Encoding.ASCII.GetBytes("null")]);
        any.ByFirstByte = Dispatch([obj, arr, String, Number, literals]);
        return any;
    }

    public static GrammarNode FreeObject(GrammarNode value) => new(NodeKind.FreeObject) { Element = value, MinBytes = 2 };

    public static GrammarNode Array(GrammarNode items) => new(NodeKind.Array) { Element = items, MinBytes = 2 };

    public static GrammarNode Enum(IReadOnlyList<byte[]> texts)
    {
        var trie = new ByteTrie(texts);
        return new GrammarNode(NodeKind.Enum) { Literals = trie, MinBytes = trie.MinRemaining[0] };
    }

    public static GrammarNode Tagged(IReadOnlyList<byte[]> prefixes, IReadOnlyList<GrammarNode> values, byte closing)
    {
        var trie = new ByteTrie(prefixes);
        for (int i = 0; i < trie.Terminal.Length; i++)
            if (trie.Terminal[i] >= 0 && trie.HasChildren[i])
                throw new ArgumentException("a tagged union's prefixes must not be prefixes of one another", nameof(prefixes));
        var cost = new int[trie.Terminal.Length];
        for (int t = 0; t < cost.Length; t++)
            cost[t] = trie.Below(t).Min(s => trie.Lengths[s] - trie.Depth[t] + values[s].MinBytes + 1);
        return new GrammarNode(NodeKind.Tagged) { Literals = trie, Continuations = [.. values], Closing = closing, PrefixCost = cost, MinBytes = cost[0] };
    }

    public static GrammarNode Union(IReadOnlyList<GrammarNode> alternatives) =>
        new(NodeKind.Union) { ByFirstByte = Dispatch(alternatives), MinBytes = alternatives.Min(a => a.MinBytes) };

    static GrammarNode?[] Dispatch(IReadOnlyList<GrammarNode> alternatives)
    {
        var table = new GrammarNode?[256];
        for (int b = 0; b < 256; b++)
            foreach (var a in alternatives)
                if (a.CanStart((byte)b))
                    table[b] = table[b] is null ? a : throw new InvalidOperationException("union alternatives overlap");
        return table;
    }

    /// <summary>Whether a text of this node may begin with <paramref name="b"/>.</summary>
    public bool CanStart(byte b) => kind switch
    {
        NodeKind.Object or NodeKind.FreeObject => b == '{',
        NodeKind.Array => b == '[',
        NodeKind.String => b == '"',
        NodeKind.Number or NodeKind.Integer => b == '-' || (b >= '0' && b <= '9'),
        NodeKind.Enum or NodeKind.Tagged => Literals!.Child(0, b) >= 0,
        _ => ByFirstByte![b] is not null,
    };

    public static GrammarNode Object(IReadOnlyList<GrammarProperty> properties)
    {
        int n = properties.Count;
        var node = new GrammarNode(NodeKind.Object) { Properties = [.. properties] };
        var keys = properties.Select(p => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(p.Name)[1..])).ToArray();
        node.Keys = new ByteTrie(keys);
        // propCost: "name":value, opening quote included.
        var propCost = new int[n];
        for (int i = 0; i < n; i++)
            propCost[i] = 1 + keys[i].Length + 1 + properties[i].Value.MinBytes;
        // reqAfter[a]: a comma and the property for every required one from a on.
        var reqAfter = new int[n + 1];
        for (int i = n - 1; i >= 0; i--)
            reqAfter[i] = reqAfter[i + 1] + (properties[i].Required ? 1 + propCost[i] : 0);
        node.AfterValueCost = new int[n + 1];
        node.AfterCommaCost = new int[n + 1];
        node.LastCandidate = new int[n + 1];
        for (int a = 0; a <= n; a++)
        {
            node.AfterValueCost[a] = reqAfter[a] + 1;
            int last = n - 1;
            for (int i = a; i < n; i++)
                if (properties[i].Required)
                {
                    last = i;
                    break;
                }
            node.LastCandidate[a] = last;
            int best = int.MaxValue;
            for (int i = a; i <= last; i++)
                best = Math.Min(best, propCost[i] + reqAfter[i + 1] + 1);
            node.AfterCommaCost[a] = best;
        }
        int firstRequired = properties.ToList().FindIndex(p => p.Required);
        node.StartCost = firstRequired < 0 ? 1 : node.AfterCommaCost[0];
        node.MinBytes = 1 + node.StartCost;
        return node;
    }

    /// <summary>Object: the minimum bytes left while its key is at <paramref name="trieNode"/>, the candidates being a..LastCandidate[a].</summary>
    public int KeyCost(int trieNode, int a)
    {
        int last = LastCandidate[a], depth = Keys!.Depth[trieNode], best = int.MaxValue;
        foreach (int p in Keys.Below(trieNode))
            if (p >= a && p <= last)
                best = Math.Min(best, Keys.Lengths[p] - depth + 1 + Properties[p].Value.MinBytes + AfterValueCost[p + 1]);
        return best;
    }

    /// <summary>Object: whether a property among a..LastCandidate[a] lies below <paramref name="trieNode"/>.</summary>
    public bool HasCandidate(int trieNode, int a)
    {
        int last = LastCandidate[a];
        foreach (int p in Keys!.Below(trieNode))
            if (p >= a && p <= last)
                return true;
        return false;
    }
}

/// <summary>
/// A small trie over byte strings (enum literals, property names): node 0 is the root; each node
/// knows its children, the strings below it, whether a string ends there and the fewest bytes to the
/// nearest end.
/// </summary>
internal sealed class ByteTrie
{
    readonly List<Dictionary<byte, int>> children = [];
    readonly List<List<int>> below = [];

    public ByteTrie(IReadOnlyList<byte[]> strings)
    {
        Lengths = strings.Select(s => s.Length).ToArray();
        var terminal = new List<int>();
        var depth = new List<int>();
        Add(terminal, depth, 0);
        for (int s = 0; s < strings.Count; s++)
        {
            int node = 0;
            below[0].Add(s);
            foreach (byte b in strings[s])
            {
                if (!children[node].TryGetValue(b, out int next))
                {
                    next = Add(terminal, depth, depth[node] + 1);
                    children[node][b] = next;
                }
                node = next;
                below[node].Add(s);
            }
            if (terminal[node] < 0)
                terminal[node] = s;
        }
        Terminal = [.. terminal];
        Depth = [.. depth];
        MinRemaining = new int[Terminal.Length];
        for (int i = 0; i < Terminal.Length; i++)
            MinRemaining[i] = below[i].Count == 0 ? 0 : below[i].Min(s => Lengths[s]) - Depth[i];
        HasChildren = children.Select(c => c.Count > 0).ToArray();
    }

    int Add(List<int> terminal, List<int> depth, int d)
    {
        children.Add([]);
        below.Add([]);
        terminal.Add(-1);
        depth.Add(d);
        return children.Count - 1;
    }

    /// <summary>The string ending at each node (-1: none).</summary>
    public int[] Terminal { get; }

    public int[] Depth { get; }

    public int[] Lengths { get; }

    public int[] MinRemaining { get; }

    public bool[] HasChildren { get; }

    /// <summary>The child of <paramref name="node"/> along <paramref name="b"/>, or -1.</summary>
    public int Child(int node, byte b) => children[node].TryGetValue(b, out int c) ? c : -1;

    /// <summary>The strings that pass through <paramref name="node"/>.</summary>
    public List<int> Below(int node) => below[node];
}

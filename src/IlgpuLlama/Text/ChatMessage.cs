using System.Text.Json;

namespace IlgpuLlama.Text;

/// <summary>
/// Who speaks a chat turn: <see cref="System"/>, <see cref="User"/>, <see cref="Assistant"/> or
/// <see cref="Tool"/> (a tool's result, Llama 3's <c>ipython</c> role). A string converts to it
/// (<c>new ChatMessage("user", "Hi")</c>) through <see cref="Parse"/>, which refuses other names.
/// </summary>
public readonly record struct ChatRole
{
    readonly string? value;

    ChatRole(string value) => this.value = value;

    /// <summary>The system prompt (at most one, first).</summary>
    public static ChatRole System { get; } = new("system");

    /// <summary>The user's turn.</summary>
    public static ChatRole User { get; } = new("user");

    /// <summary>The model's turn (text, or a tool call).</summary>
    public static ChatRole Assistant { get; } = new("assistant");

    /// <summary>A tool's result, given back to the model (rendered under Llama 3's <c>ipython</c> header).</summary>
    public static ChatRole Tool { get; } = new("tool");

    /// <summary>The role's name as chat APIs spell it: system, user, assistant or tool.</summary>
    public string Value => value ?? throw new InvalidOperationException("default(ChatRole) is no role; use ChatRole.System, User, Assistant or Tool");

    /// <summary>The role named <paramref name="name"/> (system, user, assistant, tool; ipython, Llama 3's name for tool).</summary>
    /// <exception cref="ArgumentException">Any other name.</exception>
    public static ChatRole Parse(string name) => name switch
    {
        "system" => System,
        "user" => User,
        "assistant" => Assistant,
        "tool" or "ipython" => Tool,
        null => throw new ArgumentNullException(nameof(name)),
        _ => throw new ArgumentException($"unknown chat role '{name}'; use system, user, assistant or tool", nameof(name)),
    };

    /// <summary><see cref="Parse"/>.</summary>
    public static implicit operator ChatRole(string name) => Parse(name);

    /// <inheritdoc/>
    public override string ToString() => value ?? "";
}

/// <summary>
/// One chat turn: its role and text, and, for an assistant turn that called a tool, the call
/// (<see cref="ToolCalls"/>; Llama 3.1/3.2 make one call per turn).
/// </summary>
public sealed record ChatMessage(ChatRole Role, string Content)
{
    /// <summary>The tool calls of an assistant turn (its <see cref="Content"/> is then usually empty).</summary>
    public IReadOnlyList<ChatToolCall> ToolCalls { get; init; } = [];
}

/// <summary>A call of a tool: its name and its arguments as a JSON object's text.</summary>
public sealed record ChatToolCall(string Name, string Arguments)
{
    /// <summary>The call's id (OpenAI's <c>tool_calls[].id</c>, echoed by the tool's result message).</summary>
    public string? Id { get; init; }
}

/// <summary>
/// A tool the model may call, as OpenAI's <c>tools[]</c> entry: <c>{"type": "function", "function":
/// {"name", "description", "parameters"}}</c>. <see cref="Definition"/> is that object as given: the
/// chat template writes it into the prompt as Meta's template does.
/// </summary>
public sealed record ChatTool
{
    ChatTool(string name, JsonElement definition, JsonElement? parameters)
    {
        Name = name;
        Definition = definition;
        Parameters = parameters;
    }

    /// <summary>The function's name.</summary>
    public string Name { get; }

    /// <summary>The whole <c>{"type": "function", "function": {...}}</c> object.</summary>
    public JsonElement Definition { get; }

    /// <summary>The function's parameters (a JSON Schema object), or null when it has none.</summary>
    public JsonElement? Parameters { get; }

    /// <summary>
    /// Reads one OpenAI <c>tools[]</c> entry; a malformed one gives an <see cref="ArgumentException"/>
    /// naming what is wrong.
    /// </summary>
    public static ChatTool FromOpenAi(JsonElement tool)
    {
        if (tool.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("a tool must be an object {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}");
        if (!tool.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
            throw new ArgumentException("a tool's type must be \"function\" (the only kind Llama 3 calls)");
        if (!tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("a tool needs a \"function\" object with its name and parameters");
        if (!function.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || name.GetString() is not { Length: > 0 and <= 64 } n
            || !n.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-'))
            throw new ArgumentException($"a function's name must be 1 to 64 ASCII letters, digits, underscores or dashes, got {(name.ValueKind == JsonValueKind.String ? JsonSerializer.Serialize(name.GetString()) : name.ValueKind.ToString().ToLowerInvariant())}");
        if (function.TryGetProperty("description", out var d) && d.ValueKind is not (JsonValueKind.String or JsonValueKind.Null))
            throw new ArgumentException($"the description of function '{n}' must be a string");
        if (function.TryGetProperty("strict", out var st) && st.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
            throw new ArgumentException($"strict of function '{n}' must be true or false");
        JsonElement? parameters = null;
        if (function.TryGetProperty("parameters", out var p) && p.ValueKind != JsonValueKind.Null)
        {
            if (p.ValueKind != JsonValueKind.Object)
                throw new ArgumentException($"the parameters of function '{n}' must be a JSON Schema object");
            if (p.TryGetProperty("type", out var pt) && !(pt.ValueKind == JsonValueKind.String && pt.GetString() == "object"))
                throw new ArgumentException($"the parameters of function '{n}' must be an object schema ({{\"type\": \"object\", \"properties\": {{...}}}}): a call's parameters are a JSON object");
            parameters = p.Clone();
        }
        return new ChatTool(n, tool.Clone(), parameters);
    }

    /// <summary>A function tool built from its parts (<paramref name="parametersSchema"/>: a JSON Schema object's text, or null).</summary>
    public static ChatTool Function(string name, string? description, string? parametersSchema)
    {
        var json = new System.Text.StringBuilder("{\"type\": \"function\", \"function\": {\"name\": ").Append(JsonSerializer.Serialize(name));
        if (description is not null)
            json.Append(", \"description\": ").Append(JsonSerializer.Serialize(description));
        if (parametersSchema is not null)
            json.Append(", \"parameters\": ").Append(parametersSchema);
        using var doc = JsonDocument.Parse(json.Append("}}").ToString());
        return FromOpenAi(doc.RootElement);
    }
}

/// <summary>Reads a Llama 3 reply as a tool call, in the format the chat template asks for.</summary>
public static class ToolCallFormat
{
    /// <summary>
    /// The call that <paramref name="reply"/> is, or null when it is not one: a JSON object
    /// <c>{"name": NAME, "parameters": {...}}</c> (Llama 3.1/3.2's custom-tool format; <c>"arguments"</c>
    /// is taken for <c>"parameters"</c>), alone in the reply apart from white space, naming one of
    /// <paramref name="tools"/>. The call's <see cref="ChatToolCall.Arguments"/> is the parameters
    /// object's JSON text, compact.
    /// </summary>
    public static ChatToolCall? Parse(string reply, IReadOnlyList<ChatTool> tools)
    {
        ArgumentNullException.ThrowIfNull(reply);
        ArgumentNullException.ThrowIfNull(tools);
        string text = reply.Trim(JsonWhiteSpace);
        if (text.Length < 2 || text[0] != '{' || text[^1] != '}')
            return null;
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (!root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || tools.All(t => t.Name != name.GetString()))
                return null;
            if (!(root.TryGetProperty("parameters", out var args) || root.TryGetProperty("arguments", out args)) || args.ValueKind != JsonValueKind.Object)
                return null;
            return new ChatToolCall(name.GetString()!, JsonSerializer.Serialize(args));
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Whether a reply that begins with <paramref name="start"/> may still become a tool call (its first
    /// character other than JSON white space is '{', or it has none yet).
    /// </summary>
    public static bool MayBeCall(string start)
    {
        foreach (char ch in start)
        {
            if (Array.IndexOf(JsonWhiteSpace, ch) < 0)
                return ch == '{';
        }
        return true;
    }

    /// <summary>
    /// The white space around a call: JSON's (space, tab, line feed, carriage return), as the
    /// structured-output constraint of <c>tool_choice: auto</c> skips it before deciding that a reply is
    /// a call; a reply that begins with any other character is text.
    /// </summary>
    static readonly char[] JsonWhiteSpace = [' ', '\t', '\n', '\r'];
}

/// <summary>
/// Holds a streamed reply back while it may still be a tool call (<see cref="ToolCallFormat.MayBeCall"/>):
/// its pieces are kept until the reply ends, as a call (<see cref="Add"/> returns it and the pieces are
/// dropped) or as text, or until it shows itself to be text; from then on pieces pass straight through.
/// <typeparamref name="T"/> is what a stream sends for a piece (a server's chunk, a client's update).
/// </summary>
public sealed class ToolCallHold<T>(IReadOnlyList<ChatTool> tools)
{
    readonly System.Text.StringBuilder reply = new();
    List<T>? held = [];
    bool begunWithBrace; // the reply's first character other than white space was '{' (decided once)

    /// <summary>
    /// Adds the next piece of the reply (<paramref name="last"/>: the reply ends with it). Returns what to
    /// send now, in order (nothing while held; the held pieces and this one once the reply is text), or the
    /// call when the reply ended as one.
    /// </summary>
    public (IReadOnlyList<T> Send, ChatToolCall? Call) Add(string text, T piece, bool last)
    {
        if (held is null)
            return ([piece], null);
        reply.Append(text);
        held.Add(piece);
        // Only the first character other than white space decides; once it was '{' the reply stays
        // held until it ends (so the reply is not scanned again per token).
        bool mayBeCall = begunWithBrace || ToolCallFormat.MayBeCall(text);
        if (mayBeCall && !begunWithBrace && text.AsSpan().Trim(" \t\n\r").Length > 0)
            begunWithBrace = true;
        if (last && mayBeCall && ToolCallFormat.Parse(reply.ToString(), tools) is { } call)
        {
            held = null;
            return ([], call);
        }
        if (mayBeCall && !last)
            return ([], null);
        var send = held;
        held = null;
        return (send, null);
    }
}

using System.Globalization;
using System.Text;

namespace IlgpuLlama.Text;

/// <summary>
/// The Llama 3.1/3.2 Instruct prompt format, following the chat_template shipped in the
/// Llama-3.2-*-Instruct tokenizer_config.json, tools included (its defaults: custom tools, given in
/// the first user message).
/// </summary>
/// <remarks>
/// As in that template: the system block is always emitted and always carries the knowledge-cutoff
/// and "Today Date" lines (formatted like "26 Jul 2024"); a leading system message supplies the
/// system text; message contents are trimmed, except tool results, which go under an "ipython"
/// header as a JSON string (the template's <c>tojson</c> of the content). With tools, the system block
/// begins "Environment: ipython", the first user message is preceded by the instructions and each
/// tool's definition as indented JSON, and an assistant turn that called a tool is written as
/// <c>{"name": NAME, "parameters": ARGUMENTS}</c> (one call per turn, as the template requires).
/// <see cref="Encode"/> builds the prompt structurally, so the header and
/// end-of-turn markers are special ids while message text, including any "&lt;|eot_id|&gt;" a user
/// typed, is encoded as ordinary characters.
/// </remarks>
public static class ChatTemplate
{
    private const string CuttingKnowledge = "Cutting Knowledge Date: December 2023\n";

    /// <summary>Renders the prompt as text, special tokens written by name (for display and tests).</summary>
    public static string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date = null, IReadOnlyList<ChatTool>? tools = null)
    {
        var text = new StringBuilder();
        foreach (var (_, value) in BuildSegments(messages, addGenerationPrompt, date, tools))
        {
            text.Append(value);
        }
        return text.ToString();
    }

    /// <summary>Encodes the prompt to ids, beginning with BOS.</summary>
    /// <exception cref="ArgumentException">A message the format cannot hold (tools without a user message, several tool calls in one turn).</exception>
    public static List<int> Encode(LlamaTokenizer tok, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date = null, IReadOnlyList<ChatTool>? tools = null)
    {
        ArgumentNullException.ThrowIfNull(tok);
        var ids = new List<int>();
        foreach (var (isSpecial, value) in BuildSegments(messages, addGenerationPrompt, date, tools))
        {
            if (isSpecial)
            {
                ids.Add(tok.SpecialTokens.TryGetValue(value, out int id)
                    ? id
                    : throw new TokenizerException($"The tokenizer has no special token {value}, which the Llama 3 chat format needs."));
            }
            else
            {
                tok.AppendEncoded(value, ids);
            }
        }
        return ids;
    }

    /// <summary>"26 Jul 2024" style, as strftime("%d %b %Y") renders it in the reference template.</summary>
    public static string FormatDate(DateOnly date) => date.ToString("dd MMM yyyy", CultureInfo.InvariantCulture);

    /// <summary>
    /// The prompt as alternating special markers and text; adjacent text is merged because the
    /// reference tokenizes everything between two special tokens as one string.
    /// </summary>
    private static List<(bool IsSpecial, string Value)> BuildSegments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date, IReadOnlyList<ChatTool>? tools)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (tools is { Count: 0 })
            tools = null; // no tools: the plain format (the template's `tools is none`)
        var segments = new List<(bool, string)>();
        var pendingText = new StringBuilder();

        void Special(string name)
        {
            if (pendingText.Length > 0)
            {
                segments.Add((false, pendingText.ToString()));
                pendingText.Clear();
            }
            segments.Add((true, name));
        }

        void Header(string role)
        {
            Special(Llama3Vocabulary.StartHeader);
            pendingText.Append(role);
            Special(Llama3Vocabulary.EndHeader);
            pendingText.Append("\n\n");
        }

        int first = 0;
        string systemMessage = string.Empty;
        if (messages.Count > 0 && Validate(messages[0]).Role == ChatRole.System)
        {
            systemMessage = messages[0].Content.Trim();
            first = 1;
        }

        Special(Llama3Vocabulary.BeginOfText);
        Header("system");
        if (tools is not null)
            pendingText.Append("Environment: ipython\n");
        pendingText.Append(CuttingKnowledge)
            .Append("Today Date: ").Append(FormatDate(date ?? DateOnly.FromDateTime(DateTime.Now))).Append("\n\n")
            .Append(systemMessage);
        Special(Llama3Vocabulary.EndOfTurn);

        if (tools is not null)
        {
            // The template's custom tools: the first message after the system prompt becomes a user turn
            // that carries the instructions and the definitions before its own text.
            if (first >= messages.Count)
                throw new ArgumentException("tools need a user message after the system prompt: the Llama 3 format puts the tool definitions in the first user message");
            Header("user");
            pendingText.Append("Given the following functions, please respond with a JSON for a function call ")
                .Append("with its proper arguments that best answers the given prompt.\n\n")
                .Append("Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.")
                .Append("Do not use variables.\n\n");
            foreach (var tool in tools)
                pendingText.Append(PythonJson.Dumps(tool.Definition, indent: 4)).Append("\n\n");
            pendingText.Append(Validate(messages[first]).Content.Trim());
            Special(Llama3Vocabulary.EndOfTurn);
            first++;
        }

        for (int i = first; i < messages.Count; i++)
        {
            ChatMessage message = Validate(messages[i]);
            if (message.ToolCalls.Count > 0)
            {
                if (message.ToolCalls.Count != 1)
                    throw new ArgumentException($"an assistant message has {message.ToolCalls.Count} tool calls; Llama 3 makes one call per turn (its template refuses more)");
                var call = message.ToolCalls[0];
                Header("assistant");
                pendingText.Append("{\"name\": \"").Append(call.Name).Append("\", \"parameters\": ").Append(Arguments(call)).Append('}');
            }
            else if (message.Role == ChatRole.Tool)
            {
                Header("ipython");
                pendingText.Append(PythonJson.Dumps(message.Content));
            }
            else
            {
                Header(message.Role.Value);
                pendingText.Append(message.Content.Trim());
            }
            Special(Llama3Vocabulary.EndOfTurn);
        }

        if (addGenerationPrompt)
        {
            Header("assistant");
        }
        if (pendingText.Length > 0) segments.Add((false, pendingText.ToString()));
        return segments;
    }

    /// <summary>A call's arguments as the template writes them (<c>tojson</c> of the arguments object).</summary>
    private static string Arguments(ChatToolCall call)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(string.IsNullOrWhiteSpace(call.Arguments) ? "{}" : call.Arguments);
            return PythonJson.Dumps(doc.RootElement);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ArgumentException($"the arguments of the call of '{call.Name}' are not JSON ({e.Message}); give a JSON object's text", e);
        }
    }

    private static ChatMessage Validate(ChatMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        _ = message.Role.Value; // default(ChatRole) throws, naming the roles
        ArgumentNullException.ThrowIfNull(message.Content);
        return message;
    }
}

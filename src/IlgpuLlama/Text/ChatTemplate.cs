using System.Globalization;
using System.Text;

namespace IlgpuLlama.Text;

/// <summary>One chat turn: a role ("system", "user", "assistant", "ipython"/"tool") and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// The Llama 3.1/3.2 Instruct prompt format, following the chat_template shipped in the
/// Llama-3.2-*-Instruct tokenizer_config.json (without tool definitions).
/// </summary>
/// <remarks>
/// As in that template: the system block is always emitted and always carries the knowledge-cutoff
/// and "Today Date" lines (formatted like "26 Jul 2024"); a leading system message supplies the
/// system text; message contents are trimmed, except tool results, which go under an "ipython"
/// header verbatim. <see cref="Encode"/> builds the prompt structurally, so the header and
/// end-of-turn markers are special ids while message text, including any "&lt;|eot_id|&gt;" a user
/// typed, is encoded as ordinary characters.
/// </remarks>
public static class ChatTemplate
{
    private const string CuttingKnowledge = "Cutting Knowledge Date: December 2023\n";

    /// <summary>Renders the prompt as text, special tokens written by name (for display and tests).</summary>
    public static string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date = null)
    {
        var text = new StringBuilder();
        foreach (var (_, value) in BuildSegments(messages, addGenerationPrompt, date))
        {
            text.Append(value);
        }
        return text.ToString();
    }

    /// <summary>Encodes the prompt to ids, beginning with BOS.</summary>
    public static List<int> Encode(LlamaTokenizer tok, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date = null)
    {
        ArgumentNullException.ThrowIfNull(tok);
        var ids = new List<int>();
        foreach (var (isSpecial, value) in BuildSegments(messages, addGenerationPrompt, date))
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
    private static List<(bool IsSpecial, string Value)> BuildSegments(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, DateOnly? date)
    {
        ArgumentNullException.ThrowIfNull(messages);
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
        if (messages.Count > 0 && Validate(messages[0]).Role == "system")
        {
            systemMessage = messages[0].Content.Trim();
            first = 1;
        }

        Special(Llama3Vocabulary.BeginOfText);
        Header("system");
        pendingText.Append(CuttingKnowledge)
            .Append("Today Date: ").Append(FormatDate(date ?? DateOnly.FromDateTime(DateTime.Now))).Append("\n\n")
            .Append(systemMessage);
        Special(Llama3Vocabulary.EndOfTurn);

        for (int i = first; i < messages.Count; i++)
        {
            ChatMessage message = Validate(messages[i]);
            if (message.Role is "ipython" or "tool")
            {
                Header("ipython");
                pendingText.Append(message.Content);
            }
            else
            {
                Header(message.Role);
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

    private static ChatMessage Validate(ChatMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (string.IsNullOrEmpty(message.Role)) throw new ArgumentException("A chat message has an empty role.", nameof(message));
        ArgumentNullException.ThrowIfNull(message.Content);
        return message;
    }
}

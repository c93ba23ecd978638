namespace IlgpuLlama.Text;

/// <summary>
/// Constants of the Llama 3.x tokenizer as published by Meta (llama-models, models/llama3/tokenizer.py)
/// and by the Hugging Face conversion script for versions 3.1 and 3.2.
/// </summary>
public static class Llama3Vocabulary
{
    /// <summary>
    /// The pre-tokenizer pattern; identical to tiktoken's cl100k_base pattern. It is the specification:
    /// <see cref="Llama3PreTokenizer"/> evaluates it on code points, which a .NET Regex cannot.
    /// </summary>
    public const string PreTokenizerPattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Number of special-token slots that follow the BPE ranks.</summary>
    public const int SpecialTokenCount = 256;

    /// <summary>Rank count of the real Llama 3 tokenizer, i.e. the id of &lt;|begin_of_text|&gt;.</summary>
    public const int Llama3RankCount = 128000;

    public const string BeginOfText = "<|begin_of_text|>";
    public const string EndOfText = "<|end_of_text|>";
    public const string StartHeader = "<|start_header_id|>";
    public const string EndHeader = "<|end_header_id|>";
    public const string EndOfMessage = "<|eom_id|>";
    public const string EndOfTurn = "<|eot_id|>";

    /// <summary>
    /// The Llama 3.1/3.2 special-token names in id order (offset 0 is the id equal to the rank count).
    /// Llama 3.0 named slots 4, 5, 8 and 10 as reserved tokens; 3.1 gave them meanings and
    /// renumbered the remaining reserved names, which is the list used here.
    /// </summary>
    public static IReadOnlyList<string> DefaultSpecialTokenNames { get; } = BuildDefaultNames();

    /// <summary>The default special tokens placed at <paramref name="baseId"/>..<paramref name="baseId"/>+255.</summary>
    public static IReadOnlyDictionary<string, int> DefaultSpecialTokens(int baseId)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(baseId);
        var result = new Dictionary<string, int>(SpecialTokenCount, StringComparer.Ordinal);
        for (int i = 0; i < DefaultSpecialTokenNames.Count; i++)
        {
            result.Add(DefaultSpecialTokenNames[i], baseId + i);
        }
        return result;
    }

    private static string[] BuildDefaultNames()
    {
        string[] named =
        [
            BeginOfText,
            EndOfText,
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|reserved_special_token_2|>",
            StartHeader,
            EndHeader,
            EndOfMessage,
            EndOfTurn,
            "<|python_tag|>",
        ];
        var names = new string[SpecialTokenCount];
        named.CopyTo(names, 0);
        for (int i = named.Length; i < SpecialTokenCount; i++)
        {
            // Reserved names continue from 3 because 0..2 were already used above.
            names[i] = $"<|reserved_special_token_{i - named.Length + 3}|>";
        }
        return names;
    }
}

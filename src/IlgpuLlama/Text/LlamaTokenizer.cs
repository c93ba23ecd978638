using System.Globalization;
using System.Text.Json;
using System.Text;
using IlgpuLlama.Gguf;
using Microsoft.ML.Tokenizers;

namespace IlgpuLlama.Text;

/// <summary>
/// The Llama 3.x tokenizer: tiktoken-style byte-level BPE with the Llama 3 pre-tokenizer, plus 256
/// special tokens that directly follow the BPE ranks.
/// </summary>
/// <remarks>
/// Special tokens are not recognised inside text passed to <see cref="Encode(string, bool)"/>: a user
/// who types "&lt;|eot_id|&gt;" gets the ordinary tokens for those characters, as Meta's own
/// <c>encode(..., allowed_special=set())</c> does. Special ids are only produced by callers that
/// insert them explicitly (BOS, the chat template) or ask for them with
/// <see cref="Encode(string, bool, bool)"/> (<c>tokenize --special</c>).
/// </remarks>
public sealed class LlamaTokenizer
{
    // Meta splits input this way because tiktoken's Rust core panics on very long runs; the splits
    // change token boundaries, so doing the same keeps ids identical to the reference.
    private const int MaxEncodeChars = 400_000;
    private const int MaxConsecutiveSameClassChars = 25_000;

    private const int BpeCacheSize = 1 << 16;

    private readonly TiktokenTokenizer _bpe;
    private readonly byte[]?[] _bytesById;
    private readonly bool[] _isSpecial;
    private readonly Dictionary<string, int> _specialTokens;
    // Special names grouped by first character, longest first, for Encode(..., parseSpecial: true).
    private readonly Dictionary<char, string[]> _specialsByFirstChar;

    /// <summary>How far past the BPE ranks a special token's id may lie (Llama 3 uses 256 slots).</summary>
    public const int MaxSpecialIdsBeyondRanks = 1 << 20;

    private LlamaTokenizer(TiktokenTokenizer bpe, IReadOnlyList<(byte[] Bytes, int Rank)> ranks, IReadOnlyDictionary<string, int> specialTokens)
    {
        _bpe = bpe;
        RankCount = ranks.Count;

        int maxId = -1;
        foreach (var (_, rank) in ranks) maxId = Math.Max(maxId, rank);
        foreach (int id in specialTokens.Values)
        {
            if (id < 0) throw new TokenizerException($"Special token id {id} is negative.");
            maxId = Math.Max(maxId, id);
        }

        // Ids are table indexes: one far beyond the ranks (2147483647 overflowed maxId + 1) is refused, not allocated.
        if ((long)maxId - ranks.Count >= MaxSpecialIdsBeyondRanks)
            throw new TokenizerException($"Special token id {maxId:N0} lies {(long)maxId - ranks.Count + 1:N0} ids beyond the {ranks.Count:N0} BPE ranks (at most {MaxSpecialIdsBeyondRanks:N0}); correct the id in tokenizer.json.");
        VocabSize = maxId + 1;
        _bytesById = new byte[VocabSize][];
        _isSpecial = new bool[VocabSize];
        foreach (var (bytes, rank) in ranks)
        {
            _bytesById[rank] = bytes;
        }

        _specialTokens = new Dictionary<string, int>(specialTokens.Count, StringComparer.Ordinal);
        foreach (var (name, id) in specialTokens)
        {
            if (_bytesById[id] is not null)
            {
                string what = _isSpecial[id] ? "another special token" : "a BPE rank";
                throw new TokenizerException($"Special token {name} has id {id}, which is already used by {what}.");
            }
            _bytesById[id] = Encoding.UTF8.GetBytes(name);
            _isSpecial[id] = true;
            _specialTokens.Add(name, id);
        }
        _specialsByFirstChar = _specialTokens.Keys
            .Where(name => name.Length > 0)
            .GroupBy(name => name[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(name => name.Length).ThenBy(name => name, StringComparer.Ordinal).ToArray());

        BosId = RequireSpecial(Llama3Vocabulary.BeginOfText);
        EndOfTextId = RequireSpecial(Llama3Vocabulary.EndOfText);
        EotId = RequireSpecial(Llama3Vocabulary.EndOfTurn);

        var stops = new List<int> { EndOfTextId };
        if (_specialTokens.TryGetValue(Llama3Vocabulary.EndOfMessage, out int eom)) stops.Add(eom);
        stops.Add(EotId);
        StopIds = stops;
    }

    /// <summary>Id of &lt;|begin_of_text|&gt;.</summary>
    public int BosId { get; }

    /// <summary>Id of &lt;|eot_id|&gt;, which ends an assistant turn in chat mode.</summary>
    public int EotId { get; }

    /// <summary>Id of &lt;|end_of_text|&gt;, which ends plain-text generation.</summary>
    public int EndOfTextId { get; }

    /// <summary>Ids that end generation (Meta's stop tokens: end_of_text, eom_id when present, eot_id).</summary>
    public IReadOnlyList<int> StopIds { get; }

    /// <summary>Number of BPE ranks (128000 for Llama 3).</summary>
    public int RankCount { get; }

    /// <summary>One past the highest id, ranks and special tokens together (128256 for Llama 3).</summary>
    public int VocabSize { get; }

    /// <summary>Special-token names and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _specialTokens;

    /// <summary>
    /// Loads the tokenizer of a model directory, trying <c>original/tokenizer.model</c>, then
    /// <c>tokenizer.model</c> (both tiktoken format), then <c>tokenizer.json</c> (Hugging Face byte-level BPE).
    /// </summary>
    /// <param name="modelDir">The model directory.</param>
    /// <param name="vocabSize">The model's vocab_size: an added token's id must be below it (without it, within the
    /// <see cref="Llama3Vocabulary.SpecialTokenCount"/> slots after the ranks).</param>
    /// <exception cref="TokenizerException">No tokenizer file exists, the file cannot be read, or an added token's id is outside the vocabulary.</exception>
    public static LlamaTokenizer FromDirectory(string modelDir, int? vocabSize = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDir);
        string jsonPath = Path.Combine(modelDir, "tokenizer.json");
        string[] tiktokenCandidates =
        [
            Path.Combine(modelDir, "original", "tokenizer.model"),
            Path.Combine(modelDir, "tokenizer.model"),
        ];
        foreach (string path in tiktokenCandidates)
        {
            if (File.Exists(path))
            {
                // A tokenizer.json beside the rank file names the special tokens of this exact release
                // (3.0 and 3.1 differ in slots 4, 5, 8 and 10), so its names win over the defaults.
                List<(int Id, string Name)> added = File.Exists(jsonPath)
                    ? LoadFile(jsonPath, stream => { using var doc = ParseJson(stream); return ReadAddedTokens(doc.RootElement, vocabSize); })
                    : [];
                return LoadFile(path, stream =>
                {
                    List<(byte[] Bytes, int Rank)> entries = ParseRanks(ReadAll(stream), out byte[] data);
                    return Create(entries, data, SpecialTokensWithOverrides(entries.Count, added));
                });
            }
        }

        if (File.Exists(jsonPath))
        {
            return LoadFile(jsonPath, stream => FromHuggingFaceJson(stream, vocabSize));
        }

        throw new TokenizerException(
            $"No tokenizer in '{modelDir}': looked for original/tokenizer.model, tokenizer.model and tokenizer.json; " +
            "put the model's tokenizer files there")
        { NoTokenizerFile = true };
    }

    /// <summary>
    /// The tokenizer of a model: a GGUF model's own (<see cref="FromGguf"/>) when <paramref name="model"/>
    /// is one (a .gguf file, a directory holding one, ollama:NAME), else <see cref="FromDirectory"/>.
    /// </summary>
    public static LlamaTokenizer FromModel(string model, int? vocabSize = null)
    {
        if (GgufLocation.Find(model) is not string gguf)
            return FromDirectory(model, vocabSize);
        using var file = GgufFile.Open(gguf);
        return FromGguf(file, vocabSize);
    }

    /// <summary>
    /// Builds the tokenizer a GGUF file describes in its <c>tokenizer.ggml.*</c> metadata, the same one
    /// tokenizer.json gives: the normal tokens (byte-level strings, as in tokenizer.json's vocab) are the
    /// BPE ranks by id, the control and user-defined tokens are the special tokens. Only Llama 3's
    /// tokenizer is accepted (model gpt2, pre-tokenizer llama-bpe): another would split text differently.
    /// </summary>
    /// <exception cref="TokenizerException">The metadata is missing, or describes another tokenizer.</exception>
    public static LlamaTokenizer FromGguf(GgufFile file, int? vocabSize = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        string where = file.FilePath;
        string? model = file.GetString("tokenizer.ggml.model");
        if (model is null)
            throw new TokenizerException($"{where}: the file has no tokenizer (metadata 'tokenizer.ggml.model' is missing); use a GGUF converted with its tokenizer, or give token ids");
        if (model != "gpt2")
            throw new TokenizerException($"{where}: the tokenizer is '{model}' (tokenizer.ggml.model), not Llama 3's byte-level BPE ('gpt2'); Llama 1 and 2 models are not supported");
        string? pre = file.GetString("tokenizer.ggml.pre");
        if (pre is not ("llama-bpe" or "llama3"))
            throw new TokenizerException($"{where}: the pre-tokenizer is '{pre ?? "(missing)"}' (tokenizer.ggml.pre), not Llama 3's ('llama-bpe'); its text would be split differently");
        string[] tokens = file.GetArray<string>("tokenizer.ggml.tokens", GgufValueType.String)
            ?? throw new TokenizerException($"{where}: metadata 'tokenizer.ggml.tokens' is missing; the file's tokenizer is incomplete — download it again");
        int[] types = file.GetIntegerArray("tokenizer.ggml.token_type")
            ?? throw new TokenizerException($"{where}: metadata 'tokenizer.ggml.token_type' is missing; the file's tokenizer is incomplete — download it again");
        if (types.Length != tokens.Length)
            throw new TokenizerException($"{where}: 'tokenizer.ggml.token_type' has {types.Length} entries for {tokens.Length} tokens; the file is corrupt — download it again");
        if (vocabSize is int v && tokens.Length != v)
            throw new TokenizerException($"{where}: the tokenizer has {tokens.Length} tokens but the model's vocabulary is {v}; the file is corrupt — download it again");
        var entries = new List<(byte[] Bytes, int Rank)>(tokens.Length);
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < tokens.Length; id++)
        {
            // llama.cpp's token types: 1 normal, 3 control, 4 user-defined (2 unknown, 5 unused, 6 byte).
            switch (types[id])
            {
                case 1:
                    if (!ByteLevelAlphabet.TryToBytes(tokens[id], out byte[] bytes))
                        throw new TokenizerException($"{where}: token {id} '{OneLine(tokens[id])}' is not a byte-level BPE token; the file's tokenizer is not Llama 3's");
                    entries.Add((bytes, id));
                    break;
                case 3 or 4:
                    if (!specials.TryAdd(tokens[id], id))
                        throw new TokenizerException($"{where}: special token '{OneLine(tokens[id])}' appears twice (ids {specials[tokens[id]]} and {id}); the file is corrupt — download it again");
                    break;
                default:
                    throw new TokenizerException($"{where}: token {id} has type {types[id]}, which a Llama 3 tokenizer does not use; the file's tokenizer is not Llama 3's");
            }
        }
        byte[] data;
        try
        {
            data = TiktokenModelWriter.Serialize(entries);
        }
        catch (ArgumentException e)
        {
            throw new TokenizerException($"{where}: {e.Message}", e);
        }
        try
        {
            return Create(ParseRanks(data, out _), data, specials);
        }
        catch (TokenizerException e)
        {
            throw new TokenizerException($"{where}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Checks that this tokenizer belongs to a model with <paramref name="vocabSize"/> embedding rows:
    /// its ids must be exactly 0..vocab_size-1, or prompts would index past the embedding, or the model
    /// would produce ids this tokenizer cannot print, failing mid-stream.
    /// </summary>
    /// <exception cref="TokenizerException">The sizes differ (the message names the directory and both sizes).</exception>
    public void EnsureMatches(int vocabSize, string modelDir)
    {
        if (VocabSize != vocabSize)
            throw new TokenizerException(
                $"the tokenizer in '{modelDir}' has {VocabSize} tokens but config.json says vocab_size {vocabSize}; " +
                "the tokenizer files belong to another model: copy the ones released with these weights");
    }

    /// <summary>
    /// Builds a tokenizer from a tiktoken rank file (one "base64(token bytes) rank" per line).
    /// </summary>
    /// <param name="ranks">The rank file; it is read but not disposed.</param>
    /// <param name="specialTokens">Special-token names and ids; when null the Llama 3 list is used.</param>
    /// <param name="specialTokenBase">
    /// Id of the first default special token; when null it is the rank count, as Meta does. Useful for
    /// placing Llama 3's specials at 128000 on top of a smaller compatible rank file such as cl100k_base.
    /// </param>
    public static LlamaTokenizer FromTiktoken(
        Stream ranks,
        IReadOnlyDictionary<string, int>? specialTokens = null,
        int? specialTokenBase = null)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (specialTokens is not null && specialTokenBase is not null)
        {
            throw new ArgumentException("Pass either explicit special tokens or a special-token base, not both.", nameof(specialTokenBase));
        }

        List<(byte[] Bytes, int Rank)> entries = ParseRanks(ReadAll(ranks), out byte[] data);
        return Create(entries, data, specialTokens ?? Llama3Vocabulary.DefaultSpecialTokens(specialTokenBase ?? entries.Count));
    }

    /// <summary>Builds a tokenizer from token bytes listed by rank (index = rank).</summary>
    public static LlamaTokenizer FromRanks(IReadOnlyList<byte[]> tokensByRank, IReadOnlyDictionary<string, int>? specialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(tokensByRank);
        var entries = new List<(byte[] Bytes, int Rank)>(tokensByRank.Count);
        for (int rank = 0; rank < tokensByRank.Count; rank++)
        {
            byte[]? token = tokensByRank[rank];
            if (token is null || token.Length == 0)
            {
                throw new ArgumentException($"Token at rank {rank} is null or empty.", nameof(tokensByRank));
            }
            entries.Add((token, rank));
        }
        // Round-trip through the file format so duplicates are rejected the same way as on load.
        byte[] data = TiktokenModelWriter.Serialize(entries);
        return Create(ParseRanks(data, out _), data, specialTokens ?? Llama3Vocabulary.DefaultSpecialTokens(entries.Count));
    }

    private static LlamaTokenizer Create(List<(byte[] Bytes, int Rank)> entries, byte[] tiktokenText, IReadOnlyDictionary<string, int> specialTokens)
    {
        if (entries.Count == 0) throw new TokenizerException("The rank file has no tokens.");
        // Specials are deliberately not given to the BPE: it would then turn special-token text
        // typed by a user into special ids. They are handled here instead.
        TiktokenTokenizer bpe;
        try
        {
            using var stream = new MemoryStream(tiktokenText, writable: false);
            bpe = TiktokenTokenizer.Create(
                stream,
                Llama3PreTokenizer.Instance,
                normalizer: null,
                specialTokens: null,
                cacheSize: BpeCacheSize);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException)
        {
            throw new TokenizerException($"Not a tiktoken rank file: {ex.Message}", ex);
        }
        return new LlamaTokenizer(bpe, entries, specialTokens);
    }

    /// <summary>Parses "base64 rank" lines; rejects duplicates, which the BPE would silently drop.</summary>
    private static List<(byte[] Bytes, int Rank)> ParseRanks(byte[] data, out byte[] parsed)
    {
        parsed = data;
        var entries = new List<(byte[], int)>();
        var seenRanks = new HashSet<int>();
        var seenTokens = new HashSet<string>(StringComparer.Ordinal);
        int lineNumber = 0;
        int position = 0;
        while (position < data.Length)
        {
            int end = Array.IndexOf(data, (byte)'\n', position);
            if (end < 0) end = data.Length;
            lineNumber++;
            ReadOnlySpan<byte> line = data.AsSpan(position, end - position).TrimEnd((byte)'\r');
            position = end + 1;
            if (line.IsEmpty) continue;

            int space = line.IndexOf((byte)' ');
            if (space <= 0
                || !TryParseBase64(line[..space], out byte[] bytes)
                || !int.TryParse(line[(space + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int rank))
            {
                throw new TokenizerException(
                    $"Not a tiktoken rank file: line {lineNumber} is not 'base64 rank' (SentencePiece tokenizer.model files of Llama 1/2 are not supported).");
            }
            string key = Convert.ToBase64String(bytes);
            if (!seenRanks.Add(rank) || !seenTokens.Add(key))
            {
                throw new TokenizerException($"The rank file repeats a token or rank on line {lineNumber}.");
            }
            entries.Add((bytes, rank));
        }
        return entries;
    }

    private static byte[] ReadAll(Stream stream)
    {
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static bool TryParseBase64(ReadOnlySpan<byte> ascii, out byte[] bytes)
    {
        var buffer = new byte[ascii.Length];
        if (System.Buffers.Text.Base64.DecodeFromUtf8(ascii, buffer, out int consumed, out int written) == System.Buffers.OperationStatus.Done
            && consumed == ascii.Length && written > 0)
        {
            bytes = buffer.AsSpan(0, written).ToArray();
            return true;
        }
        bytes = [];
        return false;
    }

    /// <summary>Encodes text as ordinary characters; special-token text is never turned into special ids.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos) => Encode(text, addBos, parseSpecial: false);

    /// <summary>
    /// Encodes text; with <paramref name="parseSpecial"/> the names of special tokens in the text
    /// become their ids (tiktoken's <c>allowed_special="all"</c>, llama.cpp's <c>--special</c>), the
    /// longest name winning where names overlap; without it they stay ordinary text.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addBos, bool parseSpecial)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos) ids.Add(BosId);
        if (!parseSpecial)
        {
            AppendEncoded(text, ids);
            return ids;
        }
        int textStart = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!_specialsByFirstChar.TryGetValue(text[i], out string[]? candidates)) continue;
            // Candidates are sorted longest first, so the first match is the longest.
            string? name = Array.Find(candidates, n => text.AsSpan(i).StartsWith(n, StringComparison.Ordinal));
            if (name is null) continue;
            if (i > textStart) AppendEncoded(text[textStart..i], ids);
            ids.Add(_specialTokens[name]);
            textStart = i + name.Length;
            i = textStart - 1;
        }
        if (textStart < text.Length) AppendEncoded(text[textStart..], ids);
        return ids;
    }

    internal void AppendEncoded(string text, List<int> ids)
    {
        foreach (var (chunkStart, chunkLength) in SplitByCodePoints(text, MaxEncodeChars))
        {
            ReadOnlySpan<char> chunk = text.AsSpan(chunkStart, chunkLength);
            foreach (var (start, length) in SplitLongRuns(chunk))
            {
                ids.AddRange(_bpe.EncodeToIds(chunk.Slice(start, length)));
            }
        }
    }

    /// <summary>Decodes ids to text; special tokens appear as their names, invalid UTF-8 as U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids) => Decode(ids, includeSpecial: true);

    /// <summary>
    /// Decodes ids to text, invalid UTF-8 as U+FFFD. Special tokens appear as their names with
    /// <paramref name="includeSpecial"/>, and are left out without it (as llama.cpp prints them only
    /// with --special); bytes on either side of a left-out token join as if it were not there.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool includeSpecial)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var buffer = new List<byte>();
        foreach (int id in ids)
        {
            ReadOnlySpan<byte> bytes = TokenBytesSpan(id);
            if (includeSpecial || !_isSpecial[id]) buffer.AddRange(bytes);
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(buffer));
    }

    /// <summary>
    /// The token as Hugging Face writes it (the tokenizer.json vocabulary, transformers'
    /// <c>convert_ids_to_tokens</c>): its bytes in the GPT-2 byte-to-character alphabet, so " World"
    /// is "ĠWorld"; lossless even for tokens that are part of a UTF-8 character. A special token is its name.
    /// </summary>
    public string TokenString(int id)
    {
        ReadOnlySpan<byte> bytes = TokenBytesSpan(id);
        if (_isSpecial[id]) return Encoding.UTF8.GetString(bytes);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteLevelAlphabet.ToChar(bytes[i]);
        return new string(chars);
    }

    /// <summary>The raw bytes of a token; for a special token, the UTF-8 of its name.</summary>
    public byte[] TokenBytes(int id) => TokenBytesSpan(id).ToArray();

    /// <summary>True when <paramref name="id"/> is a rank or a special token (Llama 3's ids 0..128255; a gap in the ids has none).</summary>
    public bool HasId(int id) => (uint)id < (uint)_bytesById.Length && _bytesById[id] is not null;

    /// <summary>True when <paramref name="id"/> is a special token.</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_isSpecial.Length && _isSpecial[id];

    internal ReadOnlySpan<byte> TokenBytesSpan(int id)
    {
        byte[]? bytes = (uint)id < (uint)_bytesById.Length ? _bytesById[id] : null;
        if (bytes is null)
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is not in the vocabulary (size {VocabSize}).");
        }
        return bytes;
    }

    private int RequireSpecial(string name) =>
        _specialTokens.TryGetValue(name, out int id)
            ? id
            : throw new TokenizerException($"The special tokens do not include {name}, which Llama 3 needs.");

    private static T LoadFile<T>(string path, Func<Stream, T> load)
    {
        try
        {
            using var stream = IO.InputFile.OpenRead(path);
            return load(stream);
        }
        catch (TokenizerException ex)
        {
            throw new TokenizerException($"Cannot load tokenizer '{path}': {ex.Message}", ex);
        }
        catch (Exception ex) when (ex is (IOException and not IO.NotARegularFileException) or UnauthorizedAccessException or JsonException)
        {
            throw new TokenizerException($"Cannot load tokenizer '{path}': {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Reads a Hugging Face tokenizer.json. Vocabulary ids are used as tiktoken ranks, which is exact
    /// for Llama 3 because its tokenizer.json was converted from the tiktoken ranks (merges are implied
    /// by the ranks and are therefore not read). Added tokens name the special ids.
    /// </summary>
    private static LlamaTokenizer FromHuggingFaceJson(Stream stream, int? vocabSize)
    {
        using JsonDocument doc = ParseJson(stream);
        JsonElement root = doc.RootElement;
        if (!root.TryGetProperty("model", out JsonElement model) || !model.TryGetProperty("vocab", out JsonElement vocab)
            || vocab.ValueKind != JsonValueKind.Object)
        {
            throw new TokenizerException("tokenizer.json has no model.vocab object.");
        }
        if (model.TryGetProperty("type", out JsonElement type) && type.ValueKind == JsonValueKind.String
            && type.GetString() != "BPE")
        {
            throw new TokenizerException($"tokenizer.json model type is {type.GetString()}, only byte-level BPE is supported.");
        }

        var entries = new List<(byte[] Bytes, int Rank)>();
        foreach (JsonProperty entry in vocab.EnumerateObject())
        {
            if (!ByteLevelAlphabet.TryToBytes(entry.Name, out byte[] bytes))
            {
                throw new TokenizerException($"tokenizer.json vocabulary entry '{entry.Name}' is not byte-level BPE.");
            }
            entries.Add((bytes, entry.Value.GetInt32()));
        }

        byte[] data = TiktokenModelWriter.Serialize(entries);
        return Create(ParseRanks(data, out _), data, SpecialTokensWithOverrides(entries.Count, ReadAddedTokens(root, vocabSize)));
    }

    private static JsonDocument ParseJson(Stream stream) => JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });

    /// <summary>
    /// The added tokens of a tokenizer.json. Each id must lie in the model's vocabulary: 0 to
    /// <paramref name="vocabSize"/> - 1 (vocab_size of config.json), or without one within the special
    /// slots after the ranks; an id of 2147483647 overflowed the vocabulary's size (an internal error),
    /// and a large one sized the id table by it.
    /// </summary>
    private static List<(int Id, string Name)> ReadAddedTokens(JsonElement root, int? vocabSize)
    {
        var added = new List<(int, string)>();
        int rankCount = root.TryGetProperty("model", out JsonElement model) && model.ValueKind == JsonValueKind.Object
            && model.TryGetProperty("vocab", out JsonElement vocab) && vocab.ValueKind == JsonValueKind.Object ? vocab.EnumerateObject().Count() : -1;
        if (root.TryGetProperty("added_tokens", out JsonElement tokens) && tokens.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement token in tokens.EnumerateArray())
            {
                if (token.ValueKind == JsonValueKind.Object && token.TryGetProperty("id", out JsonElement id) && token.TryGetProperty("content", out JsonElement content)
                    && content.ValueKind == JsonValueKind.String && content.GetString() is string name)
                {
                    string vocabulary = vocabSize is int v
                        ? $"the model's vocabulary of {v:N0} ids (0 to {v - 1:N0}, vocab_size in config.json)"
                        : "the tokenizer's vocabulary";
                    if (id.ValueKind != JsonValueKind.Number || !id.TryGetInt64(out long value))
                        throw new TokenizerException($"added token '{name}' has id {OneLine(id.GetRawText())}, not a whole number inside {vocabulary}; correct its id or use the model's own tokenizer.json");
                    long limit = vocabSize ?? (rankCount >= 0 ? rankCount + Llama3Vocabulary.SpecialTokenCount : int.MaxValue);
                    if (value < 0 || value >= limit || value > int.MaxValue)
                        throw new TokenizerException($"added token '{name}' has id {value}, outside {vocabulary}; correct its id or use the model's own tokenizer.json");
                    added.Add(((int)value, name));
                }
            }
        }
        return added;
    }

    private static string OneLine(string text) => text.Length > 40 ? text[..40] + "..." : text.ReplaceLineEndings(" ");

    /// <summary>The Llama 3 defaults at <paramref name="rankCount"/>, with tokenizer.json's added tokens renaming or adding ids.</summary>
    private static Dictionary<string, int> SpecialTokensWithOverrides(int rankCount, List<(int Id, string Name)> added)
    {
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        var namedIds = new HashSet<int>();
        foreach (var (id, name) in added)
        {
            // Added tokens inside the rank range are ordinary vocabulary and already covered.
            if (id < rankCount) continue;
            if (!specials.TryAdd(name, id) || !namedIds.Add(id))
            {
                throw new TokenizerException($"tokenizer.json lists special token {name} (id {id}) twice or with a shared id.");
            }
        }
        // Defaults fill only the slots and names that the file leaves free (the file may list a subset).
        foreach (var (name, id) in Llama3Vocabulary.DefaultSpecialTokens(rankCount))
        {
            if (!namedIds.Contains(id) && !specials.ContainsKey(name))
            {
                specials.Add(name, id);
            }
        }
        return specials;
    }

    /// <summary>
    /// Splits text so that no piece holds more than <see cref="MaxConsecutiveSameClassChars"/> consecutive
    /// whitespace or non-whitespace code points, mirroring Meta's tokenizer (which counts code points).
    /// </summary>
    private static List<(int Start, int Length)> SplitLongRuns(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int, int)>(1);
        if (text.IsEmpty) return pieces;

        Rune.DecodeFromUtf16(text, out Rune first, out _);
        bool runIsSpace = IsPythonSpace(first);
        int sliceStart = 0;
        int runLength = 0;
        int index = 0;
        foreach (Rune rune in text.EnumerateRunes())
        {
            bool isSpace = IsPythonSpace(rune);
            if (isSpace != runIsSpace)
            {
                runLength = 1;
                runIsSpace = isSpace;
            }
            else if (++runLength > MaxConsecutiveSameClassChars)
            {
                pieces.Add((sliceStart, index - sliceStart));
                sliceStart = index;
                runLength = 1;
            }
            index += rune.Utf16SequenceLength;
        }
        pieces.Add((sliceStart, text.Length - sliceStart));
        return pieces;
    }

    /// <summary>Cuts text into chunks of at most <paramref name="maxCodePoints"/> code points (Meta counts code points, not UTF-16 units).</summary>
    private static List<(int Start, int Length)> SplitByCodePoints(string text, int maxCodePoints)
    {
        var chunks = new List<(int, int)>(1);
        int chunkStart = 0;
        int count = 0;
        int index = 0;
        foreach (Rune rune in text.EnumerateRunes())
        {
            if (count == maxCodePoints)
            {
                chunks.Add((chunkStart, index - chunkStart));
                chunkStart = index;
                count = 0;
            }
            count++;
            index += rune.Utf16SequenceLength;
        }
        if (index > chunkStart) chunks.Add((chunkStart, index - chunkStart));
        return chunks;
    }

    // Python's str.isspace also counts the information separators U+001C..U+001F, which .NET does not.
    private static bool IsPythonSpace(Rune rune) =>
        Rune.IsWhiteSpace(rune) || (rune.Value >= 0x1C && rune.Value <= 0x1F);
}

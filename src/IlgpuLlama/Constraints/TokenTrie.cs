using System.Runtime.CompilerServices;
using IlgpuLlama.Text;

namespace IlgpuLlama.Constraints;

/// <summary>
/// The vocabulary's token bytes as a trie, built once per tokenizer (<see cref="For"/> caches it):
/// the mask of a step walks it depth first with the automaton, pruning a subtree as soon as a byte
/// is refused. Special tokens are left out (only end-of-sequence tokens, handled apart, may be chosen).
/// </summary>
/// <remarks>
/// Two tries are kept: every token, and the tokens that are not plain string text. Plain tokens
/// (printable bytes other than the quote and backslash, forming whole UTF-8 characters) leave string
/// content in string content and change nothing the termination rule reads, so inside a string
/// they are allowed together from a precomputed bit set, and only the other trie is walked.
/// </remarks>
public sealed class TokenTrie
{
    static readonly ConditionalWeakTable<LlamaTokenizer, TokenTrie> Cache = [];

    /// <summary>A preorder trie: node i's edge byte, depth (root 0), the index past its subtree, and the tokens ending there.</summary>
    internal sealed class Walk
    {
        public required byte[] Edge;
        public required int[] Depth;
        public required int[] Skip;
        public required int[] TokenStart; // tokens of node i: Tokens[TokenStart[i]..TokenStart[i + 1]]
        public required int[] Tokens;
        public int NodeCount => Edge.Length;
        public int MaxDepth;
    }

    /// <summary>Builds the tries of a vocabulary given as each id's bytes (null: no token at that id, never allowed).</summary>
    /// <param name="tokenBytes">the bytes of every id of the logit row; null for special and missing ids</param>
    public TokenTrie(IReadOnlyList<byte[]?> tokenBytes)
    {
        ArgumentNullException.ThrowIfNull(tokenBytes);
        VocabSize = tokenBytes.Count;
        bytesById = [.. tokenBytes];
        PlainTokens = new ulong[(VocabSize + 63) / 64];
        var single = new bool[256];
        var all = new List<int>();
        var other = new List<int>();
        var plain = new List<int>();
        var noBytes = new List<int>();
        for (int id = 0; id < VocabSize; id++)
        {
            var bytes = tokenBytes[id];
            if (bytes is null || bytes.Length == 0)
            {
                noBytes.Add(id);
                continue;
            }
            all.Add(id);
            if (bytes.Length == 1)
                single[bytes[0]] = true;
            if (IsPlainText(bytes))
            {
                PlainTokens[id >> 6] |= 1UL << id;
                plain.Add(id);
            }
            else
                other.Add(id);
        }
        Full = Build(tokenBytes, all);
        NonPlain = Build(tokenBytes, other);
        // The bytes some JSON text may contain: printable ASCII and the valid UTF-8 lead and
        // continuation bytes (not C0, C1, F5-FF).
        EveryByteIsAToken = Enumerable.Range(0x20, 0x80 - 0x20).Concat(Enumerable.Range(0x80, 0xC0 - 0x80)).Concat(Enumerable.Range(0xC2, 0xF5 - 0xC2)).All(b => single[b]);
        TokenCount = all.Count;
        PlainIds = [.. plain];
        NoByteIds = [.. noBytes];
    }

    /// <summary>The cached trie of a tokenizer's vocabulary (its ordinary tokens; special ids are left out).</summary>
    public static TokenTrie For(LlamaTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return Cache.GetValue(tokenizer, t =>
        {
            var bytes = new byte[]?[t.VocabSize];
            for (int id = 0; id < bytes.Length; id++)
                if (t.HasId(id) && !t.IsSpecial(id))
                    bytes[id] = t.TokenBytes(id);
            return new TokenTrie(bytes);
        });
    }

    readonly byte[]?[] bytesById;

    /// <summary>The bytes of a token in the trie (empty for an id outside it).</summary>
    public ReadOnlySpan<byte> Bytes(int id) => (uint)id < (uint)bytesById.Length ? bytesById[id] : default;

    /// <summary>Ids the vocabulary spans (the mask's length).</summary>
    public int VocabSize { get; }

    /// <summary>Nodes of the trie of every token, and of the trie of the tokens that are not plain string text.</summary>
    public (int All, int NonPlain) NodeCounts => (Full.NodeCount, NonPlain.NodeCount);

    /// <summary>Tokens in the trie.</summary>
    public int TokenCount { get; }

    /// <summary>
    /// Whether every byte JSON text may contain is a token of its own. The termination rule counts one
    /// token per byte still needed; without single-byte tokens for some bytes it may run out, and then
    /// the generation ends at the token limit with its text incomplete.
    /// </summary>
    public bool EveryByteIsAToken { get; }

    internal ulong[] PlainTokens { get; }

    internal int[] PlainIds { get; }

    /// <summary>The ids without bytes of their own (special tokens, unused ids): text to a reply that may be text.</summary>
    internal int[] NoByteIds { get; }

    internal Walk Full { get; }

    internal Walk NonPlain { get; }

    /// <summary>Whether the bytes are printable non-quote, non-backslash text made of whole UTF-8 characters.</summary>
    static bool IsPlainText(byte[] bytes)
    {
        int i = 0;
        while (i < bytes.Length)
        {
            byte b = bytes[i];
            if (b < 0x80)
            {
                if (b < 0x20 || b == '"' || b == '\\')
                    return false;
                i++;
                continue;
            }
            int more, lo = 0x80, hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) more = 1;
            else if (b >= 0xE0 && b <= 0xEF) { more = 2; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
            else if (b >= 0xF0 && b <= 0xF4) { more = 3; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
            else return false;
            if (i + more >= bytes.Length)
                return false;
            for (int k = 1; k <= more; k++)
            {
                byte c = bytes[i + k];
                if (c < lo || c > hi)
                    return false;
                lo = 0x80;
                hi = 0xBF;
            }
            i += more + 1;
        }
        return true;
    }

    static Walk Build(IReadOnlyList<byte[]?> tokenBytes, List<int> ids)
    {
        // Sorted by bytes, a parent comes before its children and every subtree's tokens are together,
        // so one pass emits the nodes in preorder and the tokens grouped by node in the same order.
        ids.Sort((a, b) =>
        {
            int c = tokenBytes[a].AsSpan().SequenceCompareTo(tokenBytes[b]);
            return c != 0 ? c : a.CompareTo(b);
        });
        var edge = new List<byte> { 0 };
        var depth = new List<int> { 0 };
        var path = new List<int> { 0 }; // node index at each depth of the current path
        var counts = new List<int> { 0 };
        byte[] previous = [];
        foreach (int id in ids)
        {
            var bytes = tokenBytes[id]!;
            int common = bytes.AsSpan().CommonPrefixLength(previous);
            path.RemoveRange(common + 1, path.Count - common - 1);
            for (int d = common; d < bytes.Length; d++)
            {
                edge.Add(bytes[d]);
                depth.Add(d + 1);
                counts.Add(0);
                path.Add(edge.Count - 1);
            }
            counts[path[bytes.Length]]++;
            previous = bytes;
        }
        int n = edge.Count;
        var starts = new int[n + 1];
        for (int i = 0; i < n; i++)
            starts[i + 1] = starts[i] + counts[i];
        var skip = new int[n];
        var open = new Stack<int>();
        for (int i = 0; i < n; i++)
        {
            while (open.Count > 0 && depth[open.Peek()] >= depth[i])
                skip[open.Pop()] = i;
            open.Push(i);
        }
        while (open.Count > 0)
            skip[open.Pop()] = n;
        return new Walk { Edge = [.. edge], Depth = [.. depth], Skip = skip, TokenStart = starts, Tokens = [.. ids], MaxDepth = depth.Max() };
    }
}

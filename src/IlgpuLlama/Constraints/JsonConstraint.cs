using System.Diagnostics;
using System.Numerics;

namespace IlgpuLlama.Constraints;

/// <summary>
/// One generation's structured-output state: which tokens may come next so that the text stays a
/// prefix of a JSON text of its <see cref="JsonGrammar"/> and can still be completed within the tokens
/// left, and the automaton advanced by each chosen token.
/// </summary>
/// <remarks>
/// <para>Termination rule: a token is allowed only if, after its bytes, the fewest bytes that
/// complete the text are at most the tokens left after it (every byte is a token of its own in a
/// byte-level vocabulary, see <see cref="TokenTrie.EveryByteIsAToken"/>). So the text is complete when
/// the token limit is reached, however unlikely the model finds the closing bytes. End-of-sequence
/// tokens are allowed only when the text is complete, and once nothing can follow they are the only
/// choice.</para>
/// <para>A grammar that allows text (<see cref="JsonGrammar.OrText"/>) starts undecided: white space
/// keeps it so, a first other character <c>{</c> commits the reply to the grammar (constrained from that
/// byte on), any other character to free text (nothing masked from then on).</para>
/// <para><see cref="MaskTime"/> and <see cref="MaskSteps"/> count the work of <see cref="ComputeAllowed"/>
/// (the trie walk) and <see cref="Apply"/> (the logit row), for the per-step cost a server or bench reports.</para>
/// </remarks>
public sealed class JsonConstraint
{
    readonly JsonAutomaton automaton;
    readonly TokenTrie vocabulary;
    readonly int[] endTokens;
    readonly ulong[] allowed;
    long maskTicks;
    Mode mode;

    enum Mode
    {
        /// <summary>The reply is a JSON text of the grammar.</summary>
        Json,

        /// <summary>Only white space so far, and the grammar allows text: a <c>{</c> starts JSON, anything else text.</summary>
        Undecided,

        /// <summary>The reply is text: nothing is masked.</summary>
        Text,
    }

    /// <param name="grammar">what the text must be</param>
    /// <param name="vocabulary">the token bytes (<see cref="TokenTrie.For"/>)</param>
    /// <param name="endTokens">the tokens that end the generation (allowed once the text is complete)</param>
    public JsonConstraint(JsonGrammar grammar, TokenTrie vocabulary, IEnumerable<int> endTokens)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentNullException.ThrowIfNull(endTokens);
        Grammar = grammar;
        this.vocabulary = vocabulary;
        automaton = new JsonAutomaton(grammar);
        this.endTokens = endTokens.Distinct().Order().ToArray();
        allowed = new ulong[(vocabulary.VocabSize + 63) / 64];
        mode = grammar.OrText ? Mode.Undecided : Mode.Json;
    }

    /// <summary>Whether the reply became text (a grammar with <see cref="JsonGrammar.OrText"/> whose first character other than white space was not <c>{</c>).</summary>
    public bool IsText => mode == Mode.Text;

    /// <summary>The grammar.</summary>
    public JsonGrammar Grammar { get; }

    /// <summary>Whether the text so far may end: a complete JSON text of the grammar, or text (or only white space) where the grammar allows it.</summary>
    public bool IsComplete => mode != Mode.Json || automaton.IsComplete;

    /// <summary>Whether an end token has been taken.</summary>
    public bool Ended { get; private set; }

    /// <summary>Fewest bytes that complete the text from here.</summary>
    public int MinBytesToComplete => mode != Mode.Json ? 0 : automaton.MinBytesToComplete;

    /// <summary>Time spent computing masks and applying them to logit rows.</summary>
    public TimeSpan MaskTime => Stopwatch.GetElapsedTime(0, maskTicks);

    /// <summary>Masks computed.</summary>
    public int MaskSteps { get; private set; }

    /// <summary>
    /// Sets <paramref name="logits"/> to -infinity at every token not allowed now (a row longer than the
    /// vocabulary is masked past it too), given the tokens that may still be generated, this one included.
    /// </summary>
    public void Apply(Span<float> logits, int remainingTokens)
    {
        var bits = ComputeAllowed(remainingTokens);
        long start = Stopwatch.GetTimestamp();
        int n = Math.Min(logits.Length, vocabulary.VocabSize);
        for (int w = 0; w * 64 < n; w++)
        {
            ulong word = bits[w];
            int first = w * 64, end = Math.Min(n, first + 64);
            if (word == ulong.MaxValue)
                continue;
            if (word == 0)
            {
                logits[first..end].Fill(float.NegativeInfinity);
                continue;
            }
            // Only the refused tokens of a mixed word, lowest first.
            for (ulong refused = ~word; refused != 0; refused &= refused - 1)
            {
                int i = first + BitOperations.TrailingZeroCount(refused);
                if (i >= end)
                    break;
                logits[i] = float.NegativeInfinity;
            }
        }
        logits[n..].Fill(float.NegativeInfinity);
        maskTicks += Stopwatch.GetTimestamp() - start;
    }

    /// <summary>
    /// The allowed tokens as a bit set over the vocabulary (bit i of word i / 64), valid until the next
    /// call, given the tokens that may still be generated, this one included.
    /// </summary>
    public ReadOnlySpan<ulong> ComputeAllowed(int remainingTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(remainingTokens, 1);
        long start = Stopwatch.GetTimestamp();
        Array.Clear(allowed);
        int budget = remainingTokens - 1; // bytes that may follow the next token
        bool any = false;
        if (mode == Mode.Text)
        {
            // Free text: every id is allowed (the bits past the vocabulary stay clear).
            Array.Fill(allowed, ulong.MaxValue);
            if (vocabulary.VocabSize % 64 != 0)
                allowed[^1] = (1UL << (vocabulary.VocabSize % 64)) - 1;
            any = true;
        }
        else if (mode == Mode.Undecided && !Ended)
            any |= WalkTrie(vocabulary.Full, budget, undecided: true);
        else if (!Ended)
        {
            TokenTrie.Walk walk = vocabulary.Full;
            if (automaton.InStringContent(out bool isKey))
            {
                // Plain text leaves a string's minimum as it is; a key's may rise or fall by one (a
                // repeat of an earlier key needs one more byte). So plain tokens are all allowed or all
                // refused, except for a key right at the budget, where those that would repeat a key are not.
                int cost = automaton.MinBytesToComplete;
                if (cost + (isKey ? 1 : 0) <= budget)
                {
                    vocabulary.PlainTokens.CopyTo(allowed, 0);
                    walk = vocabulary.NonPlain;
                    any = true;
                }
                else
                {
                    walk = vocabulary.NonPlain;
                    if (isKey)
                        any |= AllowNewKeys(budget);
                }
            }
            any |= WalkTrie(walk, budget);
        }
        // An end token may also be an ordinary token (a stop token id given by the caller): it ends
        // the text whatever its bytes, so it is allowed exactly when the text is complete.
        bool complete = IsComplete || Ended;
        foreach (int e in endTokens)
        {
            if ((uint)e >= (uint)vocabulary.VocabSize)
                continue;
            if (complete)
                allowed[e >> 6] |= 1UL << e;
            else
                allowed[e >> 6] &= ~(1UL << e);
        }
        any |= complete;
        if (!any)
        {
            // Only reachable when a byte the text needs is no token of its own: end the generation.
            foreach (int e in endTokens)
                if ((uint)e < (uint)vocabulary.VocabSize)
                    allowed[e >> 6] |= 1UL << e;
        }
        maskTicks += Stopwatch.GetTimestamp() - start;
        MaskSteps++;
        return allowed;
    }

    /// <summary>
    /// A free object's key at the budget: the plain tokens after which the key is new (it then needs
    /// only its closing quote), when that fits; a token that makes it repeat an earlier key needs one byte more, which does not.
    /// </summary>
    bool AllowNewKeys(int budget)
    {
        automaton.KeyState(out ulong hash, out var keys);
        int rest = automaton.MinBytesToComplete - (JsonAutomaton.KeyList.Contains(keys, hash) ? 2 : 1);
        if (rest + 1 > budget)
            return false;
        bool any = false;
        foreach (int id in vocabulary.PlainIds)
        {
            if (!JsonAutomaton.KeyList.Contains(keys, JsonAutomaton.Hash(hash, vocabulary.Bytes(id))))
            {
                allowed[id >> 6] |= 1UL << id;
                any = true;
            }
        }
        return any;
    }

    /// <summary>
    /// Walks the vocabulary's trie from the automaton's state, allowing each token whose bytes the
    /// grammar takes and that can still complete within the budget. <paramref name="undecided"/>: the
    /// first step of a reply that may be text, where also tokens of white space only (still undecided),
    /// tokens whose first other byte is not <c>{</c> and special tokens (text: a trie subtree at once) are
    /// allowed, and the grammar starts at a token's <c>{</c>.
    /// </summary>
    bool WalkTrie(TokenTrie.Walk walk, int budget, bool undecided = false)
    {
        // The automaton's state after each byte of the current path, to return to for a sibling, and
        // whether the path has entered the JSON text (always, unless undecided).
        Span<long> marks = walk.MaxDepth < 512 ? stackalloc long[walk.MaxDepth + 1] : new long[walk.MaxDepth + 1];
        Span<bool> inJson = walk.MaxDepth < 512 ? stackalloc bool[walk.MaxDepth + 1] : new bool[walk.MaxDepth + 1];
        marks[0] = automaton.Mark();
        inJson[0] = !undecided;
        byte[] edge = walk.Edge;
        int[] depth = walk.Depth, skip = walk.Skip, tokenStart = walk.TokenStart, tokens = walk.Tokens;
        int n = walk.NodeCount;
        bool any = false;
        int i = 1;
        while (i < n)
        {
            int d = depth[i];
            byte b = edge[i];
            if (!inJson[d - 1])
            {
                if (IsWhiteSpace(b))
                {
                    any |= AllowRange(tokens, tokenStart[i], tokenStart[i + 1]);
                    marks[d] = marks[0];
                    inJson[d] = false;
                    i++;
                    continue;
                }
                if (b != '{')
                {
                    any |= AllowRange(tokens, tokenStart[i], skip[i] < n ? tokenStart[skip[i]] : tokens.Length);
                    i = skip[i];
                    continue;
                }
            }
            automaton.Restore(marks[inJson[d - 1] ? d - 1 : 0]);
            if (!automaton.Step(b))
            {
                i = skip[i];
                continue;
            }
            inJson[d] = true;
            if (tokenStart[i] < tokenStart[i + 1] && automaton.MinBytesToComplete <= budget)
                any |= AllowRange(tokens, tokenStart[i], tokenStart[i + 1]);
            marks[d] = automaton.Mark();
            i++;
        }
        automaton.Restore(marks[0]);
        if (undecided)
        {
            // Tokens without bytes of their own (special tokens) are text too; the end tokens are decided by the caller.
            foreach (int id in vocabulary.NoByteIds)
                allowed[id >> 6] |= 1UL << id;
        }
        return any;
    }

    bool AllowRange(int[] tokens, int from, int to)
    {
        for (int t = from; t < to; t++)
            allowed[tokens[t] >> 6] |= 1UL << tokens[t];
        return from < to;
    }

    static bool IsWhiteSpace(byte b) => b is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r';

    /// <summary>Whether <paramref name="token"/> is allowed now (computes the mask).</summary>
    public bool IsAllowed(int token, int remainingTokens)
    {
        var bits = ComputeAllowed(remainingTokens);
        return (uint)token < (uint)vocabulary.VocabSize && (bits[token >> 6] & (1UL << token)) != 0;
    }

    /// <summary>Advances by a chosen token (an end token ends the text). Throws when the grammar refuses its bytes.</summary>
    public void Accept(int token)
    {
        if (Array.BinarySearch(endTokens, token) >= 0)
        {
            Ended = true;
            return;
        }
        if (mode == Mode.Text)
            return;
        var bytes = vocabulary.Bytes(token);
        if (mode == Mode.Undecided)
        {
            int first = 0;
            while (first < bytes.Length && IsWhiteSpace(bytes[first]))
                first++;
            if (bytes.IsEmpty || (first < bytes.Length && bytes[first] != '{'))
            {
                mode = Mode.Text; // a special token or a first character that is not '{': text
                return;
            }
            if (first == bytes.Length)
                return; // white space only: still undecided
            mode = Mode.Json;
            bytes = bytes[first..];
        }
        if (bytes.IsEmpty)
            throw new InvalidOperationException($"token {token} is not an ordinary token of the vocabulary");
        long mark = automaton.Mark();
        foreach (byte b in bytes)
        {
            if (!automaton.Step(b))
            {
                automaton.Restore(mark);
                automaton.Commit();
                throw new InvalidOperationException($"token {token} does not continue the JSON text");
            }
        }
        automaton.Commit();
    }

    /// <summary>Counts allowed tokens in a mask (tests, benchmarks).</summary>
    public static int Count(ReadOnlySpan<ulong> bits)
    {
        int c = 0;
        foreach (ulong w in bits)
            c += BitOperations.PopCount(w);
        return c;
    }
}

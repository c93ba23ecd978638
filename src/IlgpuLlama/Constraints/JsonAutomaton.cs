namespace IlgpuLlama.Constraints;

/// <summary>
/// A pushdown automaton over bytes that accepts the compact JSON texts of a <see cref="JsonGrammar"/>.
/// The stack holds one frame per open value (object, array, string, number, literal) under a root
/// frame. Every frame keeps <see cref="Frame.Cum"/>, the fewest bytes that close it and everything
/// below it, so <see cref="MinBytesToComplete"/> is one read: the termination rule compares it with
/// the tokens left.
/// </summary>
/// <remarks>
/// Steps are undoable: every frame write is logged, and <see cref="Restore"/> rolls back to a
/// <see cref="Mark"/>. The vocabulary walk uses this to try each trie edge from its parent's state
/// without copying the stack. Each reachable state has a byte that lowers the minimum by exactly one
/// (or is complete), which is why one byte per remaining token always suffices. (The one proviso: a
/// free object's key that repeats an earlier one needs a character that makes it new, which exists
/// while the object has fewer keys than there are printable ASCII characters.)
/// </remarks>
public sealed class JsonAutomaton
{
    /// <summary>Digit limits of numbers (so every number converts to a double, and random text cannot make them long).</summary>
    public const int MaxIntegerDigits = 15, MaxFractionDigits = 15, MaxExponentDigits = 2;

    internal enum Phase : byte
    {
        RootValue, RootIn, RootDone,
        ObjStart, ObjKey, ObjColon, ObjValue, ObjIn, ObjAfterValue, ObjAfterComma,
        FreeStart, FreeKey, FreeColon, FreeValue, FreeIn, FreeAfterValue, FreeAfterComma,
        ArrStart, ArrIn, ArrAfterValue, ArrAfterComma,
        StrContent, StrEscape, StrHex, StrUtf8,
        NumMinus, NumZero, NumInt, NumDot, NumFrac, NumE, NumESign, NumExp,
        Literal,
        TagPrefix, TagValue, TagIn, TagAfterValue,
    }

    /// <summary>A completed key of a free object (its bytes' hash), in a list shared by later states.</summary>
    internal sealed record KeyList(ulong Hash, KeyList? Next)
    {
        public static bool Contains(KeyList? list, ulong hash)
        {
            for (var k = list; k is not null; k = k.Next)
                if (k.Hash == hash)
                    return true;
            return false;
        }
    }

    internal struct Frame
    {
        public GrammarNode Node;
        public Phase Phase;

        /// <summary>Object: next candidate property; string: hex digits seen or UTF-8 bytes still due; number: digits; literal, tagged prefix: trie node.</summary>
        public int A;

        /// <summary>Object: key trie node or chosen property; string: next UTF-8 byte range (lo | hi &lt;&lt; 8) or the no-surrogate flag; tagged: the chosen prefix; literal/free object: unused.</summary>
        public int B;

        /// <summary>String: a free object's key (hash its bytes, refuse duplicates).</summary>
        public bool IsKey;

        /// <summary>Key string: FNV-1a hash of its bytes so far; free object: whether the empty key was used.</summary>
        public ulong Hash;

        /// <summary>Free object: its keys so far; key string: its object's keys.</summary>
        public KeyList? Keys;

        /// <summary>Fewest bytes that close this frame and all below it.</summary>
        public int Cum;
    }

    Frame[] stack = new Frame[16];
    int depth;
    Frame[] undoFrames = new Frame[64];
    int[] undoSlots = new int[64];
    int undoCount;

    /// <summary>Starts before the first byte of a text of <paramref name="grammar"/>.</summary>
    public JsonAutomaton(JsonGrammar grammar)
    {
        ArgumentNullException.ThrowIfNull(grammar);
        stack[0] = new Frame { Node = grammar.Root, Phase = Phase.RootValue, Cum = grammar.Root.MinBytes };
        depth = 1;
    }

    /// <summary>Fewest bytes that complete the text from here.</summary>
    public int MinBytesToComplete => stack[depth - 1].Cum;

    /// <summary>Whether the text so far is a complete value of the grammar (end-of-sequence may come now).</summary>
    public bool IsComplete
    {
        get
        {
            ref Frame top = ref stack[depth - 1];
            if (depth == 1)
                return top.Phase == Phase.RootDone;
            return depth == 2 && top.Cum == 0 && top.Phase is Phase.NumZero or Phase.NumInt or Phase.NumFrac or Phase.NumExp or Phase.Literal;
        }
    }

    /// <summary>Whether the top frame is string content outside a key (plain text bytes are all allowed and change nothing the mask needs).</summary>
    internal bool InStringContent(out bool isKey)
    {
        ref Frame top = ref stack[depth - 1];
        isKey = top.IsKey;
        return top.Phase == Phase.StrContent;
    }

    /// <summary>The key string on top: its hash so far and its object's earlier keys.</summary>
    internal void KeyState(out ulong hash, out KeyList? keys)
    {
        ref Frame top = ref stack[depth - 1];
        hash = top.Hash;
        keys = top.Keys;
    }

    /// <summary>A key's hash after more bytes (as the steps compute it).</summary>
    internal static ulong Hash(ulong hash, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
            hash = Fnv(hash, b);
        return hash;
    }

    // ---- undo -----------------------------------------------------------------------------------

    internal long Mark() => ((long)undoCount << 32) | (uint)depth;

    internal void Restore(long mark)
    {
        int count = (int)(mark >> 32);
        while (undoCount > count)
        {
            undoCount--;
            stack[undoSlots[undoCount]] = undoFrames[undoCount];
        }
        depth = (int)(uint)mark;
    }

    /// <summary>Forgets the undo log (after a token is taken for good).</summary>
    internal void Commit() => undoCount = 0;

    void Save(int slot)
    {
        if (undoCount == undoFrames.Length)
        {
            Array.Resize(ref undoFrames, undoCount * 2);
            Array.Resize(ref undoSlots, undoCount * 2);
        }
        undoSlots[undoCount] = slot;
        undoFrames[undoCount] = slot < stack.Length ? stack[slot] : default;
        undoCount++;
    }

    /// <summary>Replaces the top frame (logged) and recomputes its minimum.</summary>
    void SetTop(in Frame f)
    {
        int slot = depth - 1;
        Save(slot);
        stack[slot] = f;
        stack[slot].Cum = (slot == 0 ? 0 : stack[slot - 1].Cum) + OwnCost(stack[slot]);
    }

    void Push(in Frame f)
    {
        if (depth == stack.Length)
            Array.Resize(ref stack, depth * 2);
        Save(depth);
        stack[depth] = f;
        stack[depth].Cum = stack[depth - 1].Cum + OwnCost(f);
        depth++;
    }

    // ---- costs ----------------------------------------------------------------------------------

    static int OwnCost(in Frame f)
    {
        var node = f.Node;
        switch (f.Phase)
        {
            case Phase.RootValue: return node.MinBytes;
            case Phase.RootIn or Phase.RootDone: return 0;
            case Phase.ObjStart: return node.StartCost;
            case Phase.ObjKey: return node.KeyCost(f.B, f.A);
            case Phase.ObjColon: return 1 + node.Properties[f.B].Value.MinBytes + node.AfterValueCost[f.B + 1];
            case Phase.ObjValue: return node.Properties[f.B].Value.MinBytes + node.AfterValueCost[f.B + 1];
            case Phase.ObjIn or Phase.ObjAfterValue: return node.AfterValueCost[f.A];
            case Phase.ObjAfterComma: return node.AfterCommaCost[f.A];
            case Phase.FreeStart or Phase.FreeIn or Phase.FreeAfterValue: return 1;
            case Phase.FreeKey or Phase.FreeColon: return 2 + node.Element!.MinBytes;
            case Phase.FreeValue: return 1 + node.Element!.MinBytes;
            // "" (or a one-character key when "" is taken), a colon, the value, the closing brace.
            case Phase.FreeAfterComma: return (f.Hash != 0 ? 3 : 2) + 2 + node.Element!.MinBytes;
            case Phase.ArrStart or Phase.ArrIn or Phase.ArrAfterValue: return 1;
            case Phase.ArrAfterComma: return node.Element!.MinBytes + 1;
            // A key that repeats an earlier one needs one more character before its quote; one
            // mid-escape or mid-character might end as such a repeat.
            case Phase.StrContent: return f.IsKey && KeyList.Contains(f.Keys, f.Hash) ? 2 : 1;
            case Phase.StrEscape: return f.IsKey ? 3 : 2;
            case Phase.StrHex: return 4 - f.A + 1;
            case Phase.StrUtf8: return f.A + 1 + (f.IsKey ? 1 : 0);
            case Phase.NumMinus or Phase.NumDot or Phase.NumE or Phase.NumESign: return 1;
            case Phase.NumZero or Phase.NumInt or Phase.NumFrac or Phase.NumExp: return 0;
            case Phase.Literal: return node.Literals!.MinRemaining[f.A];
            case Phase.TagPrefix: return node.PrefixCost[f.A];
            case Phase.TagValue: return node.Continuations[f.B].MinBytes + 1;
            case Phase.TagIn or Phase.TagAfterValue: return 1;
            default: throw new InvalidOperationException($"phase {f.Phase}");
        }
    }

    // ---- steps ----------------------------------------------------------------------------------

    /// <summary>Feeds one byte; false (state unchanged only through <see cref="Restore"/>) when the grammar refuses it.</summary>
    public bool Step(byte b)
    {
        while (true)
        {
            Frame f = stack[depth - 1];
            switch (f.Phase)
            {
                case Phase.RootValue:
                    f.Phase = Phase.RootIn;
                    SetTop(f);
                    return StartValue(f.Node, b);
                case Phase.RootIn:
                case Phase.RootDone:
                    return false;

                case Phase.ObjStart:
                case Phase.ObjAfterValue:
                case Phase.ObjAfterComma:
                {
                    var node = f.Node;
                    bool canClose = f.Phase != Phase.ObjAfterComma && node.AfterValueCost[f.A] == 1;
                    if (b == '}' && canClose)
                        return Close();
                    if (b == ',' && f.Phase == Phase.ObjAfterValue && f.A < node.Properties.Length)
                    {
                        f.Phase = Phase.ObjAfterComma;
                        SetTop(f);
                        return true;
                    }
                    if (b == '"' && f.Phase != Phase.ObjAfterValue && f.A < node.Properties.Length)
                    {
                        f.Phase = Phase.ObjKey;
                        f.B = 0;
                        SetTop(f);
                        return true;
                    }
                    return false;
                }
                case Phase.ObjKey:
                {
                    var keys = f.Node.Keys!;
                    int child = keys.Child(f.B, b);
                    if (child < 0 || !f.Node.HasCandidate(child, f.A))
                        return false;
                    int p = keys.Terminal[child];
                    if (p >= 0 && p >= f.A && p <= f.Node.LastCandidate[f.A])
                    {
                        f.Phase = Phase.ObjColon;
                        f.B = p;
                        f.A = p + 1;
                    }
                    else
                        f.B = child;
                    SetTop(f);
                    return true;
                }
                case Phase.ObjColon:
                case Phase.FreeColon:
                    if (b != ':')
                        return false;
                    f.Phase = f.Phase == Phase.ObjColon ? Phase.ObjValue : Phase.FreeValue;
                    SetTop(f);
                    return true;
                case Phase.ObjValue:
                {
                    var value = f.Node.Properties[f.B].Value;
                    if (!value.CanStart(b))
                        return false;
                    f.Phase = Phase.ObjIn;
                    SetTop(f);
                    return StartValue(value, b);
                }

                case Phase.FreeStart:
                case Phase.FreeAfterValue:
                case Phase.FreeAfterComma:
                    if (b == '}' && f.Phase != Phase.FreeAfterComma)
                        return Close();
                    if (b == ',' && f.Phase == Phase.FreeAfterValue)
                    {
                        f.Phase = Phase.FreeAfterComma;
                        SetTop(f);
                        return true;
                    }
                    if (b == '"' && f.Phase != Phase.FreeAfterValue)
                    {
                        f.Phase = Phase.FreeKey;
                        SetTop(f);
                        Push(new Frame { Node = GrammarNode.String, Phase = Phase.StrContent, IsKey = true, Hash = FnvBasis, Keys = f.Keys });
                        return true;
                    }
                    return false;
                case Phase.FreeValue:
                    if (!f.Node.Element!.CanStart(b))
                        return false;
                    f.Phase = Phase.FreeIn;
                    SetTop(f);
                    return StartValue(f.Node.Element, b);

                case Phase.ArrStart:
                case Phase.ArrAfterValue:
                case Phase.ArrAfterComma:
                    if (b == ']' && f.Phase != Phase.ArrAfterComma)
                        return Close();
                    if (b == ',' && f.Phase == Phase.ArrAfterValue)
                    {
                        f.Phase = Phase.ArrAfterComma;
                        SetTop(f);
                        return true;
                    }
                    if (f.Phase != Phase.ArrAfterValue && f.Node.Element!.CanStart(b))
                    {
                        f.Phase = Phase.ArrIn;
                        SetTop(f);
                        return StartValue(f.Node.Element, b);
                    }
                    return false;

                case Phase.StrContent:
                    return StringContent(f, b);
                case Phase.StrEscape:
                    if (b == 'u' && !f.IsKey)
                    {
                        f.Phase = Phase.StrHex;
                        f.A = 0;
                        f.B = 0;
                    }
                    else if (b is (byte)'"' or (byte)'\\' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t' || (b == '/' && !f.IsKey))
                    {
                        // Keys take only the escapes without a raw spelling, so equal keys are equal bytes.
                        f.Phase = Phase.StrContent;
                        f.Hash = Fnv(f.Hash, b);
                    }
                    else
                        return false;
                    SetTop(f);
                    return true;
                case Phase.StrHex:
                {
                    int digit = HexValue(b);
                    if (digit < 0)
                        return false;
                    // No surrogate code units (\uD800-\uDFFF): a lone one is not text.
                    if (f.A == 0 && digit == 0xD)
                        f.B = 1;
                    else if (f.A == 1 && f.B == 1 && digit >= 8)
                        return false;
                    f.A++;
                    if (f.A == 4)
                        f.Phase = Phase.StrContent;
                    SetTop(f);
                    return true;
                }
                case Phase.StrUtf8:
                {
                    int lo = f.B & 0xFF, hi = f.B >> 8;
                    if (b < lo || b > hi)
                        return false;
                    f.A--;
                    f.B = 0x80 | (0xBF << 8);
                    f.Hash = Fnv(f.Hash, b);
                    if (f.A == 0)
                        f.Phase = Phase.StrContent;
                    SetTop(f);
                    return true;
                }

                case Phase.NumMinus:
                    if (b == '0')
                        f.Phase = Phase.NumZero;
                    else if (b >= '1' && b <= '9')
                    {
                        f.Phase = Phase.NumInt;
                        f.A = 1;
                    }
                    else
                        return false;
                    SetTop(f);
                    return true;
                case Phase.NumZero:
                case Phase.NumInt:
                {
                    bool integer = f.Node.Kind == NodeKind.Integer;
                    if (f.Phase == Phase.NumInt && b >= '0' && b <= '9')
                    {
                        if (f.A == MaxIntegerDigits)
                            return false;
                        f.A++;
                    }
                    else if (b == '.' && !integer)
                        f.Phase = Phase.NumDot;
                    else if ((b == 'e' || b == 'E') && !integer)
                        f.Phase = Phase.NumE;
                    else if (b >= '0' && b <= '9')
                        return false; // no leading zeros
                    else
                    {
                        EndValue();
                        continue;
                    }
                    SetTop(f);
                    return true;
                }
                case Phase.NumDot:
                case Phase.NumE:
                case Phase.NumESign:
                    if (b >= '0' && b <= '9')
                    {
                        f.Phase = f.Phase == Phase.NumDot ? Phase.NumFrac : Phase.NumExp;
                        f.A = 1;
                    }
                    else if (f.Phase == Phase.NumE && (b == '+' || b == '-'))
                        f.Phase = Phase.NumESign;
                    else
                        return false;
                    SetTop(f);
                    return true;
                case Phase.NumFrac:
                case Phase.NumExp:
                    if (b >= '0' && b <= '9')
                    {
                        if (f.A == (f.Phase == Phase.NumFrac ? MaxFractionDigits : MaxExponentDigits))
                            return false;
                        f.A++;
                    }
                    else if (f.Phase == Phase.NumFrac && (b == 'e' || b == 'E'))
                        f.Phase = Phase.NumE;
                    else
                    {
                        EndValue();
                        continue;
                    }
                    SetTop(f);
                    return true;

                case Phase.Literal:
                {
                    var trie = f.Node.Literals!;
                    int child = trie.Child(f.A, b);
                    if (child < 0)
                    {
                        if (trie.Terminal[f.A] < 0)
                            return false;
                        EndValue();
                        continue;
                    }
                    if (trie.Terminal[child] >= 0 && !trie.HasChildren[child])
                        return Close();
                    f.A = child;
                    SetTop(f);
                    return true;
                }

                case Phase.TagPrefix:
                {
                    int child = f.Node.Literals!.Child(f.A, b);
                    if (child < 0)
                        return false;
                    TagAdvance(ref f, child);
                    SetTop(f);
                    return true;
                }
                case Phase.TagValue:
                {
                    var value = f.Node.Continuations[f.B];
                    if (!value.CanStart(b))
                        return false;
                    f.Phase = Phase.TagIn;
                    SetTop(f);
                    return StartValue(value, b);
                }
                case Phase.TagIn:
                    return false;
                case Phase.TagAfterValue:
                    return b == f.Node.Closing && Close();
                default:
                    throw new InvalidOperationException($"phase {f.Phase}");
            }
        }
    }

    bool StringContent(Frame f, byte b)
    {
        if (b == '"')
        {
            if (!f.IsKey)
                return Close();
            if (KeyList.Contains(f.Keys, f.Hash))
                return false;
            // The key joins its object's list; the object now waits for the colon.
            Pop();
            Frame parent = stack[depth - 1];
            parent.Keys = new KeyList(f.Hash, parent.Keys);
            if (f.Hash == FnvBasis)
                parent.Hash = 1; // the empty key is taken
            parent.Phase = Phase.FreeColon;
            SetTop(parent);
            return true;
        }
        if (b == '\\')
        {
            f.Phase = Phase.StrEscape;
            f.Hash = Fnv(f.Hash, b);
            SetTop(f);
            return true;
        }
        if (b < 0x20)
            return false;
        if (b < 0x80)
        {
            if (f.IsKey)
            {
                f.Hash = Fnv(f.Hash, b);
                SetTop(f);
            }
            return true;
        }
        // The first byte of a multi-byte UTF-8 character: how many follow and the range of the next.
        int more, lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            more = 1;
        else if (b >= 0xE0 && b <= 0xEF)
        {
            more = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        }
        else if (b >= 0xF0 && b <= 0xF4)
        {
            more = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        }
        else
            return false;
        f.Phase = Phase.StrUtf8;
        f.A = more;
        f.B = lo | (hi << 8);
        f.Hash = Fnv(f.Hash, b);
        SetTop(f);
        return true;
    }

    /// <summary>Starts a value of <paramref name="node"/> with its first byte (the parent's phase already says a value is in progress).</summary>
    bool StartValue(GrammarNode node, byte b)
    {
        if (node.Kind == NodeKind.Union)
        {
            var alternative = node.ByFirstByte![b];
            if (alternative is null)
                return false;
            node = alternative;
        }
        switch (node.Kind)
        {
            case NodeKind.Object:
                if (b != '{') return false;
                Push(new Frame { Node = node, Phase = Phase.ObjStart });
                return true;
            case NodeKind.FreeObject:
                if (b != '{') return false;
                Push(new Frame { Node = node, Phase = Phase.FreeStart });
                return true;
            case NodeKind.Array:
                if (b != '[') return false;
                Push(new Frame { Node = node, Phase = Phase.ArrStart });
                return true;
            case NodeKind.String:
                if (b != '"') return false;
                Push(new Frame { Node = node, Phase = Phase.StrContent });
                return true;
            case NodeKind.Number:
            case NodeKind.Integer:
                if (b == '-')
                    Push(new Frame { Node = node, Phase = Phase.NumMinus });
                else if (b == '0')
                    Push(new Frame { Node = node, Phase = Phase.NumZero });
                else if (b >= '1' && b <= '9')
                    Push(new Frame { Node = node, Phase = Phase.NumInt, A = 1 });
                else
                    return false;
                return true;
            case NodeKind.Tagged:
            {
                int child = node.Literals!.Child(0, b);
                if (child < 0)
                    return false;
                var frame = new Frame { Node = node, Phase = Phase.TagPrefix };
                TagAdvance(ref frame, child);
                Push(frame);
                return true;
            }
            case NodeKind.Enum:
            {
                var trie = node.Literals!;
                int child = trie.Child(0, b);
                if (child < 0)
                    return false;
                Push(new Frame { Node = node, Phase = Phase.Literal, A = child });
                if (trie.Terminal[child] >= 0 && !trie.HasChildren[child])
                    return Close();
                return true;
            }
            default:
                return false;
        }
    }

    /// <summary>A tagged frame moves to prefix trie node <paramref name="child"/>: at a prefix's end, to its value.</summary>
    static void TagAdvance(ref Frame f, int child)
    {
        int chosen = f.Node.Literals!.Terminal[child];
        if (chosen >= 0)
        {
            f.Phase = Phase.TagValue;
            f.B = chosen;
        }
        else
            f.A = child;
    }

    void Pop()
    {
        depth--;
    }

    /// <summary>The top value ends with the byte just taken: pop it and move its parent past the value.</summary>
    bool Close()
    {
        EndValue();
        return true;
    }

    /// <summary>Pops the finished top value and moves its parent on to what follows a value.</summary>
    void EndValue()
    {
        Pop();
        Frame parent = stack[depth - 1];
        parent.Phase = parent.Phase switch
        {
            Phase.RootIn => Phase.RootDone,
            Phase.ObjIn => Phase.ObjAfterValue,
            Phase.FreeIn => Phase.FreeAfterValue,
            Phase.ArrIn => Phase.ArrAfterValue,
            Phase.TagIn => Phase.TagAfterValue,
            _ => throw new InvalidOperationException($"a value ended under phase {parent.Phase}"),
        };
        SetTop(parent);
    }

    const ulong FnvBasis = 14695981039346656037UL;

    static ulong Fnv(ulong hash, byte b) => (hash ^ b) * 1099511628211UL;

    static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}

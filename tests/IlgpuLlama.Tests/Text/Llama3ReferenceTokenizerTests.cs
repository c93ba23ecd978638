using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

/// <summary>
/// <see cref="LlamaTokenizer.Encode(string, bool)"/> against an independent implementation of the Llama 3 tokenizer
/// written here from its specification, on hard strings and on random text.
/// </summary>
/// <remarks>
/// The reference: (1) pre-tokenization by the published pattern (<see cref="Llama3Vocabulary.PreTokenizerPattern"/>,
/// which is Meta's pat_str) matched by .NET's Regex over a copy of the text in which every code point
/// outside the BMP is one BMP stand-in of the same class (letter, digit or other), because the
/// reference engines (tiktoken's fancy-regex, Hugging Face's Oniguruma) match code points while .NET
/// matches UTF-16 units, and U+017F (long s) replaced by s, because those engines' case-insensitive
/// matching uses Unicode simple case folding (CaseFolding.txt: 017F; C; 0073) and .NET's does not; (2) tiktoken's byte-pair merge: a piece that is a whole rank is that rank,
/// otherwise start from single bytes and repeatedly merge the adjacent pair whose concatenation has
/// the lowest rank (leftmost on ties). The ranks are cl100k_base read from the data package by the
/// parser below, not by the production one; Llama 3's first 100,256 ranks are cl100k_base's, so the
/// ids are real Llama 3 ids wherever Llama 3's extra 28K ranks do not apply.
/// </remarks>
public sealed class Llama3ReferenceTokenizerTests
{
    static LlamaTokenizer Tok => TestTokenizers.Cl100kAsLlama3;

    public static TheoryData<string> HardStrings => new()
    {
        // unicode: accents precomposed and combining, Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai
        "Café naïve résumé — coöperate, cafe\u0301 (combining acute)",
        "Ελληνικά, русский язык, العربية, עברית, हिन्दी, ภาษาไทย",
        // CJK, including Extension B letters outside the BMP (U+20000...) and full-width forms
        "中文字符 日本語のテキスト 한국어 문장 漢字かなカナ",
        "𠀀𠀁𠀂 rare 𪚥 characters, ＦＵＬＬ ｗｉｄｔｈ １２３",
        // mathematical letters and digits outside the BMP are \p{L} and \p{N}
        "𝐀𝐁𝐂 bold, 𝟏𝟐𝟑𝟒 digits, x𝑦z",
        // emoji: single, ZWJ family, skin tone, flags, keycap, emoji glued to letters and digits
        "🦙🎉 👩‍👩‍👧‍👦 👍🏽 🇫🇷🇯🇵 1️⃣ 🦙llama 😀Hi 🔥42 end🚀",
        // digit runs: \p{N}{1,3} splits every three, in every script
        "1234567890 3.14159265358979 1,000,000 007 ٣٤٥٦٧ १२३४ ²³¹ ½ Ⅻ",
        // whitespace runs: spaces, tabs, newlines, CRLF, no-break and ideographic spaces, trailing runs
        "a  b   c    d\t\te\n\nf\r\n\r\ng \n h\u00A0\u00A0i\u3000j   ",
        "\n\n\n   leading\t \t\n   trailing   \n",
        // code
        "def f(x):\n    return x ** 2  # comment\n\nprint(f(3))\n",
        "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; } // C#\r\n",
        "{\"ids\": [128000, 9906], \"ok\": true, \"s\": \"a\\\"b\"}\n<div class='x'>&amp;</div>",
        // contractions in any case, including U+017F LATIN SMALL LETTER LONG S, which folds to s
        "I'm sure you're right, they'll say we'd've DON'T I'M YOU'RE 'S 'LL 'ſ it's",
        // special-token text is ordinary text
        "<|begin_of_text|><|eot_id|> <|start_header_id|>user<|end_header_id|>",
        // punctuation runs with newlines, quotes, symbols
        "?!... ---***\n\n>>> «quotes» “curly” ‘single’ ¿qué? ¡sí! @#$%^&*()_+",
    };

    [Theory]
    [MemberData(nameof(HardStrings))]
    public void Encode_equals_the_reference_on_hard_strings(string text)
    {
        int[] expected = ReferenceEncode(text);
        IReadOnlyList<int> actual = Tok.Encode(text, addBos: false);
        Assert.Equal(expected, actual);
        Assert.Equal(text, Tok.Decode(actual));
    }

    [Theory]
    [MemberData(nameof(HardStrings))]
    public void Pieces_equal_the_reference_pattern_on_code_points(string text)
    {
        Assert.Equal(ReferencePieces(text), Llama3PreTokenizer.Split(text).Select(p => text.Substring(p.Offset, p.Length)));
    }

    [Fact]
    public void Encode_equals_the_reference_on_random_text()
    {
        var random = new Random(13);
        for (int trial = 0; trial < 300; trial++)
        {
            string text = RandomText(random, random.Next(1, 60), bmpOnly: false);
            Assert.True(ReferenceEncode(text).SequenceEqual(Tok.Encode(text, addBos: false)), $"differs on {Escape(text)}");
        }
    }

    [Fact]
    public void On_bmp_text_the_scanner_splits_exactly_like_the_regex()
    {
        // Without supplementary characters .NET's Regex is a faithful reference on its own (the
        // projection then only folds U+017F, which keeps every position).
        var random = new Random(7);
        for (int trial = 0; trial < 2000; trial++)
        {
            string text = RandomText(random, random.Next(1, 40), bmpOnly: true);
            var expected = Pattern.Matches(Project(text)).Select(m => (m.Index, m.Length)).ToList();
            var actual = Llama3PreTokenizer.Split(text);
            Assert.True(expected.SequenceEqual(actual),
                $"differs on {Escape(text)}: regex [{Show(text, expected)}], scanner [{Show(text, actual)}]");
        }
    }

    [Fact]
    public void Supplementary_letters_and_emoji_prefixes_are_split_by_code_point()
    {
        // What the UTF-16 regex gets wrong: these are single pieces for Meta's tokenizer.
        Assert.Equal(["🦙llama"], Pieces("🦙llama"));
        Assert.Equal([" 𠀀𠀁"], Pieces(" 𠀀𠀁"));
        Assert.Equal(["𝐀𝐁𝐂"], Pieces("𝐀𝐁𝐂"));
        Assert.Equal(["𝟏𝟐𝟑", "𝟒"], Pieces("𝟏𝟐𝟑𝟒"));
        // Contractions fold case as Unicode does: long s is a case variant of s.
        Assert.Equal(["'ſ", "한"], Pieces("'ſ한"));
    }

    static string[] Pieces(string text) => Llama3PreTokenizer.Split(text).Select(p => text.Substring(p.Offset, p.Length)).ToArray();

    // ---- the reference ------------------------------------------------------------------------

    static readonly Regex Pattern = new(Llama3Vocabulary.PreTokenizerPattern, RegexOptions.CultureInvariant);

    static readonly Lazy<Dictionary<string, int>> Ranks = new(() =>
    {
        var ranks = new Dictionary<string, int>(110_000, StringComparer.Ordinal);
        using var reader = new StreamReader(TestTokenizers.OpenCl100kRanks(), Encoding.ASCII);
        for (string? line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            string[] parts = line.Split(' ');
            ranks.Add(Key(Convert.FromBase64String(parts[0])), int.Parse(parts[1], CultureInfo.InvariantCulture));
        }
        return ranks;
    });

    static string Key(ReadOnlySpan<byte> bytes) => Convert.ToHexString(bytes);

    /// <summary>One character per code point: supplementary ones become a BMP stand-in of their class, ſ becomes s.</summary>
    static string Project(string text)
    {
        var projected = new StringBuilder(text.Length);
        foreach (Rune r in text.EnumerateRunes())
        {
            projected.Append(r.Value == 0x17F ? 's'
                : r.IsBmp ? (char)r.Value
                : Rune.IsLetter(r) ? 'a'
                : Rune.IsNumber(r) ? '0'
                : '#');
        }
        return projected.ToString();
    }

    static List<string> ReferencePieces(string text)
    {
        // Match positions in the projection are code-point indexes.
        var codePoints = text.EnumerateRunes().ToArray();
        var offsets = new int[codePoints.Length + 1];
        for (int i = 0; i < codePoints.Length; i++) offsets[i + 1] = offsets[i] + codePoints[i].Utf16SequenceLength;
        return Pattern.Matches(Project(text))
            .Select(m => text[offsets[m.Index]..offsets[m.Index + m.Length]])
            .ToList();
    }

    internal static int[] ReferenceEncode(string text)
    {
        var ids = new List<int>();
        foreach (string piece in ReferencePieces(text)) ids.AddRange(BytePairMerge(Encoding.UTF8.GetBytes(piece)));
        return [.. ids];
    }

    static IEnumerable<int> BytePairMerge(byte[] piece)
    {
        var ranks = Ranks.Value;
        if (ranks.TryGetValue(Key(piece), out int whole)) return [whole];
        var parts = piece.Select(b => new[] { b }).ToList();
        while (parts.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (ranks.TryGetValue(Key([.. parts[i], .. parts[i + 1]]), out int rank) && rank < bestRank)
                {
                    best = i;
                    bestRank = rank;
                }
            }
            if (best < 0) break;
            parts[best] = [.. parts[best], .. parts[best + 1]];
            parts.RemoveAt(best + 1);
        }
        return parts.Select(p => ranks[Key(p)]);
    }

    // ---- random text --------------------------------------------------------------------------

    static readonly string[] BmpAlphabet =
    [
        "a", "Z", "é", "ß", "中", "ア", "한", "ж", "ا", "1", "7", "٣", "²", "½", " ", "  ", "\t", "\n", "\r\n", "\r",
        "\u00A0", "\u3000", "\u2028", "\u000B", "'", "'s", "'LL", "'re", "'ſ", ".", ",", "!?", "-", "(", "\"", "«", "€", "\u0301",
        "\u200D", "<|eot_id|>", "\u001F",
    ];

    static readonly string[] SupplementaryAlphabet = ["🦙", "😀", "👍🏽", "🇫🇷", "𠀀", "𝐀", "𝟏", "👩‍👧"];

    static string RandomText(Random random, int parts, bool bmpOnly)
    {
        var text = new StringBuilder();
        for (int i = 0; i < parts; i++)
        {
            bool supplementary = !bmpOnly && random.Next(5) == 0;
            string[] alphabet = supplementary ? SupplementaryAlphabet : BmpAlphabet;
            string piece = alphabet[random.Next(alphabet.Length)];
            // Words and numbers longer than one character exercise merges and the three-digit split.
            text.Append(random.Next(4) == 0 ? string.Concat(Enumerable.Repeat(piece, random.Next(2, 6))) : piece);
        }
        return text.ToString();
    }

    static string Show(string text, IEnumerable<(int Offset, int Length)> pieces) =>
        string.Join(" | ", pieces.Select(p => Escape(text.Substring(p.Offset, p.Length))));

    static string Escape(string text) =>
        string.Concat(text.EnumerateRunes().Select(r => r.Value is >= 0x20 and < 0x7F ? r.ToString() : $"\\u{{{r.Value:X}}}"));
}

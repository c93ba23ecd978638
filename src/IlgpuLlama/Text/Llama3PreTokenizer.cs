using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace IlgpuLlama.Text;

/// <summary>
/// The Llama 3 pre-tokenizer (<see cref="Llama3Vocabulary.PreTokenizerPattern"/>) evaluated on Unicode
/// code points, as Meta's tiktoken (Rust fancy-regex) and Hugging Face's tokenizers do.
/// </summary>
/// <remarks>
/// A .NET <see cref="System.Text.RegularExpressions.Regex"/> matches UTF-16 units, so a character
/// outside the Basic Multilingual Plane is seen as two surrogates of category Cs: a supplementary
/// letter such as U+20000 (CJK Extension B) or U+1D400 (mathematical bold A) is not <c>\p{L}</c>,
/// and an emoji cannot be the optional one-character prefix of a word ("🦙abc" is one piece for the
/// reference, two for the regex). This scanner tries the pattern's seven alternatives in order at
/// each code point, with the backtracking they imply written out, so its pieces equal the
/// reference's on all text; on BMP-only text they equal the regex's (the tests check both).
/// </remarks>
public sealed class Llama3PreTokenizer : PreTokenizer
{
    /// <summary>The shared instance (the scanner has no state).</summary>
    public static Llama3PreTokenizer Instance { get; } = new();

    private Llama3PreTokenizer() { }

    /// <inheritdoc/>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        text is null ? [] : Split(text.AsSpan());

    /// <inheritdoc/>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    /// <summary>The pieces of <paramref name="text"/> as (UTF-16 offset, UTF-16 length), in order, covering all of it.</summary>
    public static List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int, int)>(text.Length / 4 + 1);
        int i = 0;
        while (i < text.Length)
        {
            int length = MatchAt(text, i);
            pieces.Add((i, length));
            i += length;
        }
        return pieces;
    }

    private enum Kind { Letter, Number, Space, Other }

    /// <summary>Length in UTF-16 units of the match starting at <paramref name="i"/>; always at least one code point.</summary>
    private static int MatchAt(ReadOnlySpan<char> s, int i)
    {
        var (first, firstKind, firstLength) = At(s, i);

        // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if (first.Value == '\'' && Contraction(s, i + 1) is int contraction and > 0)
            return 1 + contraction;

        // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : the optional prefix is one code point that is not a
        // newline, letter or digit (a space, tab, punctuation or an emoji), taken only when a letter follows.
        if (firstKind == Kind.Letter)
            return firstLength + RunOf(s, i + firstLength, Kind.Letter);
        if (firstKind != Kind.Number && !IsNewline(first) && i + firstLength < s.Length && At(s, i + firstLength).Kind == Kind.Letter)
            return firstLength + RunOf(s, i + firstLength, Kind.Letter);

        // 3. \p{N}{1,3}
        if (firstKind == Kind.Number)
        {
            int end = i;
            for (int n = 0; n < 3 && end < s.Length && At(s, end) is { Kind: Kind.Number } digit; n++)
                end += digit.Length;
            return end - i;
        }

        // 4.  ?[^\s\p{L}\p{N}]+[\r\n]* : an optional plain space, symbols, then any newlines.
        int symbols = i;
        if (first.Value == ' ' && i + 1 < s.Length && At(s, i + 1).Kind == Kind.Other)
            symbols = i + 1;
        if (At(s, symbols).Kind == Kind.Other)
        {
            int end = symbols + RunOf(s, symbols, Kind.Other);
            while (end < s.Length && IsNewline(s[end])) end++;
            return end - i;
        }

        // Only whitespace is left. Every whitespace code point is in the BMP, so units are code points here.
        int runEnd = i + RunOf(s, i, Kind.Space);

        // 5. \s*[\r\n]+ : \s* gives back characters until [\r\n]+ can match, so the piece ends
        // just after the last newline of the whitespace run.
        for (int k = runEnd - 1; k >= i; k--)
        {
            if (IsNewline(s[k]))
                return k + 1 - i;
        }

        // 6. \s+(?!\S) : the whole run at the end of the text, else all but its last character
        // (which then starts the next piece, e.g. the space before a word).
        if (runEnd == s.Length)
            return runEnd - i;
        if (runEnd - i >= 2)
            return runEnd - 1 - i;

        // 7. \s+ : a single whitespace character before a non-space.
        return runEnd - i;
    }

    /// <summary>Length after the apostrophe of a contraction at <paramref name="j"/>, or 0.</summary>
    private static int Contraction(ReadOnlySpan<char> s, int j)
    {
        if (j >= s.Length) return 0;
        char a = s[j];
        // Case-insensitive as in the reference's regex engines, whose simple case folding also maps
        // U+017F (long s) to s; no other character folds to one of these letters.
        if (IsFold(a, 's') || IsFold(a, 't') || IsFold(a, 'm') || IsFold(a, 'd')) return 1;
        if (j + 1 >= s.Length) return 0;
        char b = s[j + 1];
        if ((IsFold(a, 'r') && IsFold(b, 'e')) || (IsFold(a, 'v') && IsFold(b, 'e')) || (IsFold(a, 'l') && IsFold(b, 'l'))) return 2;
        return 0;
    }

    private static bool IsFold(char c, char lower) =>
        c == lower || c == char.ToUpperInvariant(lower) || (lower == 's' && c == '\u017F');

    private static int RunOf(ReadOnlySpan<char> s, int start, Kind kind)
    {
        int end = start;
        while (end < s.Length && At(s, end) is var (_, k, n) && k == kind)
            end += n;
        return end - start;
    }

    private static (Rune Rune, Kind Kind, int Length) At(ReadOnlySpan<char> s, int i)
    {
        // A lone surrogate decodes as U+FFFD with length 1: it is "other", as the regex sees it.
        Rune.DecodeFromUtf16(s[i..], out Rune rune, out int length);
        return (rune, Classify(rune), length);
    }

    private static Kind Classify(Rune rune)
    {
        if (Rune.IsWhiteSpace(rune)) return Kind.Space;
        switch (Rune.GetUnicodeCategory(rune))
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.LowercaseLetter:
            case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter:
                return Kind.Letter;
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.OtherNumber:
                return Kind.Number;
            default:
                return Kind.Other;
        }
    }

    private static bool IsNewline(Rune rune) => rune.Value is '\r' or '\n';

    private static bool IsNewline(char c) => c is '\r' or '\n';
}

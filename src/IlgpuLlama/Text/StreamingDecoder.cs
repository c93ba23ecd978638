using System.Text;

namespace IlgpuLlama.Text;

/// <summary>
/// Turns a stream of generated token ids into text for one sequence. Tokens often end in the middle
/// of a UTF-8 character (byte-level BPE), so the bytes of an unfinished character are held back
/// until the character completes: a character split over several tokens (an emoji over four byte
/// tokens) appears whole with its last byte, never as U+FFFD. Only bytes that can no longer become
/// a character (a stray continuation byte, a lead byte followed by a non-continuation) come out as
/// U+FFFD, as soon as that is certain, so output never stalls; bytes still unfinished at the end
/// come out of <see cref="Flush"/> as U+FFFD. Special tokens are left out unless
/// <c>includeSpecial</c> (as llama.cpp prints them only with --special). Push outputs plus
/// <see cref="Flush"/> equal <see cref="LlamaTokenizer.Decode(IEnumerable{int}, bool)"/> of all ids.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly LlamaTokenizer _tokenizer;
    private readonly bool _includeSpecial;
    // A stateful UTF-8 decoder with replacement fallback does exactly the hold-back and U+FFFD logic,
    // and is specified to produce the same characters as decoding the concatenated bytes at once.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    /// <param name="tokenizer">The tokenizer whose ids are pushed.</param>
    /// <param name="includeSpecial">Write special tokens by name; by default they produce no text
    /// (unlike <see cref="LlamaTokenizer.Decode(IEnumerable{int})"/>, which shows them, because a
    /// stream is what a user reads).</param>
    public StreamingDecoder(LlamaTokenizer tokenizer, bool includeSpecial = false)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _includeSpecial = includeSpecial;
    }

    /// <summary>Adds one token and returns the text it completed (possibly empty).</summary>
    public string Push(int tokenId)
    {
        ReadOnlySpan<byte> bytes = _tokenizer.TokenBytesSpan(tokenId);
        return !_includeSpecial && _tokenizer.IsSpecial(tokenId) ? string.Empty : DecodeBytes(bytes, flush: false);
    }

    /// <summary>Returns any held-back bytes (as U+FFFD, since they never completed) and resets the decoder; call it once, at the end.</summary>
    public string Flush()
    {
        string rest = DecodeBytes([], flush: true);
        _utf8.Reset();
        return rest;
    }

    private string DecodeBytes(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush);
        if (needed > _chars.Length) _chars = new char[Math.Max(needed, _chars.Length * 2)];
        int written = _utf8.GetChars(bytes, _chars, flush);
        return written == 0 ? string.Empty : new string(_chars, 0, written);
    }
}

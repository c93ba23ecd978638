using System.Text;

namespace IlgpuLlama.Text;

/// <summary>
/// Turns a stream of generated token ids into text for one sequence. Tokens often end in the middle
/// of a UTF-8 character (byte-level BPE), so trailing bytes of an unfinished character are held back
/// until the character completes; bytes that can no longer form a valid character come out as U+FFFD
/// as soon as that is certain, so output never stalls. Push outputs plus <see cref="Flush"/> equal
/// <see cref="LlamaTokenizer.Decode"/> of all ids.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly LlamaTokenizer _tokenizer;
    // A stateful UTF-8 decoder with replacement fallback does exactly the hold-back and U+FFFD logic,
    // and is specified to produce the same characters as decoding the concatenated bytes at once.
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    public StreamingDecoder(LlamaTokenizer tokenizer)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
    }

    /// <summary>Adds one token and returns the text it completed (possibly empty).</summary>
    public string Push(int tokenId) => DecodeBytes(_tokenizer.TokenBytesSpan(tokenId), flush: false);

    /// <summary>Returns any held-back bytes (as U+FFFD, since they never completed) and resets the decoder.</summary>
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

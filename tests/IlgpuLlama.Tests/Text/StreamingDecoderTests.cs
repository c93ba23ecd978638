using System.Text;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

public class StreamingDecoderTests
{
    // In the trained tokenizer ranks 0..255 are the single bytes, so a character can be fed byte by byte.
    private static LlamaTokenizer Tiny => TestTokenizers.Tiny;

    [Theory]
    [InlineData("é")]
    [InlineData("中")]
    [InlineData("🦙")]
    public void MultiByteCharacter_SplitAcrossTokens_AppearsOnlyWhenComplete(string character)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(character);
        var decoder = new StreamingDecoder(Tiny);
        for (int i = 0; i < bytes.Length - 1; i++)
        {
            Assert.Equal(string.Empty, decoder.Push(bytes[i]));
        }
        Assert.Equal(character, decoder.Push(bytes[^1]));
        Assert.Equal(string.Empty, decoder.Flush());
    }

    [Fact]
    public void MixedText_ByteTokens_ConcatenationEqualsDecode()
    {
        const string text = "a é 中文 🦙 done";
        int[] ids = Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();
        Assert.Equal(text, StreamAll(Tiny, ids));
        Assert.Equal(text, Tiny.Decode(ids));
    }

    [Fact]
    public void InvalidBytes_BecomeReplacementCharacter_WithoutStalling()
    {
        var decoder = new StreamingDecoder(Tiny);
        Assert.Equal("\uFFFD", decoder.Push(0xFF));          // never valid in UTF-8
        Assert.Equal(string.Empty, decoder.Push(0xC3));      // could still become é
        Assert.Equal("\uFFFDA", decoder.Push('A'));          // ...but did not
        Assert.Equal(string.Empty, decoder.Push(0xE4));
        Assert.Equal(string.Empty, decoder.Push(0xB8));
        Assert.Equal("\uFFFD", decoder.Flush());             // unfinished at the end
        Assert.Equal("x", decoder.Push('x'));                // usable after a flush
    }

    [Fact]
    public void SpecialToken_AfterUnfinishedBytes_MatchesDecode()
    {
        int[] ids = [0xF0, 0x9F, Tiny.EotId, 'o', 'k'];
        Assert.Equal(Tiny.Decode(ids), StreamAll(Tiny, ids, includeSpecial: true));
        Assert.EndsWith("<|eot_id|>ok", StreamAll(Tiny, ids, includeSpecial: true));
    }

    [Fact]
    public void RandomTokenSequences_ConcatenationEqualsDecode()
    {
        LlamaTokenizer tok = TestTokenizers.Cl100kAsLlama3;
        var random = new Random(1234);
        for (int trial = 0; trial < 200; trial++)
        {
            int[] ids = Enumerable.Range(0, random.Next(1, 40))
                .Select(_ => random.Next(10) == 0 ? 128000 + random.Next(12) : random.Next(100256))
                .ToArray();
            Assert.Equal(tok.Decode(ids), StreamAll(tok, ids, includeSpecial: true));
            Assert.Equal(tok.Decode(ids, includeSpecial: false), StreamAll(tok, ids));
        }
    }

    [Fact]
    public void RealEncoding_OfNonAscii_StreamsToTheOriginal()
    {
        LlamaTokenizer tok = TestTokenizers.Cl100kAsLlama3;
        const string text = "Grüße aus Köln! 東京タワー 🦙🦙 naïve café ☕";
        IReadOnlyList<int> ids = tok.Encode(text, addBos: false);
        Assert.Equal(text, StreamAll(tok, ids));
    }

    private static string StreamAll(LlamaTokenizer tok, IEnumerable<int> ids, bool includeSpecial = false)
    {
        var decoder = new StreamingDecoder(tok, includeSpecial);
        var text = new StringBuilder();
        foreach (int id in ids) text.Append(decoder.Push(id));
        return text.Append(decoder.Flush()).ToString();
    }
}

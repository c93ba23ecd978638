using System.Text;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

/// <summary>What a user sees while tokens stream: no special-token names, no U+FFFD for a character that is still arriving.</summary>
public sealed class StreamingOutputTests
{
    static LlamaTokenizer Tiny => TestTokenizers.Tiny;

    static LlamaTokenizer Cl100k => TestTokenizers.Cl100kAsLlama3;

    [Fact]
    public void Emoji_split_in_four_byte_tokens_appears_once_whole()
    {
        // Ranks 0..255 of the trained tokenizer are the single bytes: F0 9F A6 99 is four tokens.
        byte[] llama = Encoding.UTF8.GetBytes("🦙");
        Assert.Equal(4, llama.Length);
        var decoder = new StreamingDecoder(Tiny);
        string[] pushed = [decoder.Push('a'), .. llama.Select(b => decoder.Push(b)), decoder.Push('b')];
        Assert.Equal(["a", "", "", "", "🦙", "b"], pushed);
        Assert.Equal("", decoder.Flush());
    }

    [Fact]
    public void Characters_split_by_the_real_bpe_never_show_a_replacement_mid_stream()
    {
        // cl100k (= Llama 3's first ranks) encodes many CJK characters and emoji as several tokens
        // that each end inside a character; the text must still arrive without U+FFFD.
        const string text = "龍🦙👩‍👧 火锅 𠀀 ✨ 한국어 😀!";
        IReadOnlyList<int> ids = Cl100k.Encode(text, addBos: false);
        int partial = ids.Count(id => !IsCompleteUtf8(Cl100k.TokenBytes(id)));
        Assert.True(partial >= 4, $"the test needs tokens that split characters, got {partial}");

        var decoder = new StreamingDecoder(Cl100k);
        var output = new StringBuilder();
        foreach (int id in ids)
        {
            string piece = decoder.Push(id);
            Assert.DoesNotContain('\uFFFD', piece);
            output.Append(piece);
        }
        Assert.Equal("", decoder.Flush());
        Assert.Equal(text, output.ToString());
    }

    [Fact]
    public void Special_tokens_print_nothing_by_default_and_their_name_with_includeSpecial()
    {
        int[] ids = [Cl100k.BosId, .. Cl100k.Encode("Hi", addBos: false), Cl100k.SpecialTokens["<|reserved_special_token_143|>"], Cl100k.EotId];
        Assert.Equal("Hi", Stream(new StreamingDecoder(Cl100k), ids));
        Assert.Equal("<|begin_of_text|>Hi<|reserved_special_token_143|><|eot_id|>", Stream(new StreamingDecoder(Cl100k, includeSpecial: true), ids));
        Assert.Equal("Hi", Cl100k.Decode(ids, includeSpecial: false));
    }

    [Fact]
    public void A_skipped_special_token_inside_a_character_does_not_break_it()
    {
        int[] ids = [0xF0, 0x9F, Tiny.SpecialTokens["<|reserved_special_token_143|>"], 0xA6, 0x99];
        var decoder = new StreamingDecoder(Tiny);
        Assert.Equal(["", "", "", "", "🦙"], ids.Select(decoder.Push).ToArray());
        Assert.Equal("🦙", Tiny.Decode(ids, includeSpecial: false));
    }

    [Fact]
    public void An_unfinished_character_is_flushed_as_a_replacement_only_at_the_end()
    {
        var decoder = new StreamingDecoder(Tiny);
        Assert.Equal("x", decoder.Push('x'));
        Assert.Equal("", decoder.Push(0xE4));
        Assert.Equal("", decoder.Push(0xB8));
        Assert.Equal("\uFFFD", decoder.Flush());
    }

    static string Stream(StreamingDecoder decoder, IEnumerable<int> ids) =>
        string.Concat(ids.Select(decoder.Push)) + decoder.Flush();

    static bool IsCompleteUtf8(byte[] bytes)
    {
        try
        {
            new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }
}

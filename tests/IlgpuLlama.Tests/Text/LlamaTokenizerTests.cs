using IlgpuLlama.Cli.Infrastructure;
using System.Text;
using System.Text.Json;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Text;

public class LlamaTokenizerTests
{
    private static LlamaTokenizer Tok => TestTokenizers.Cl100kAsLlama3;

    [Fact]
    public void HelloWorld_MatchesLlama3Ids()
    {
        Assert.Equal([9906, 4435], Tok.Encode("Hello World", addBos: false));
        Assert.Equal([128000, 9906, 4435], Tok.Encode("Hello World", addBos: true));
    }

    [Fact]
    public void SpecialIds_FollowLlama31List()
    {
        Assert.Equal(128000, Tok.BosId);
        Assert.Equal(128001, Tok.EndOfTextId);
        Assert.Equal(128009, Tok.EotId);
        Assert.Equal(128256, Tok.VocabSize);
        Assert.Equal(256, Tok.SpecialTokens.Count);
        Assert.Equal(128004, Tok.SpecialTokens["<|finetune_right_pad_id|>"]);
        Assert.Equal(128005, Tok.SpecialTokens["<|reserved_special_token_2|>"]);
        Assert.Equal(128006, Tok.SpecialTokens["<|start_header_id|>"]);
        Assert.Equal(128007, Tok.SpecialTokens["<|end_header_id|>"]);
        Assert.Equal(128008, Tok.SpecialTokens["<|eom_id|>"]);
        Assert.Equal(128010, Tok.SpecialTokens["<|python_tag|>"]);
        Assert.Equal(128011, Tok.SpecialTokens["<|reserved_special_token_3|>"]);
        Assert.Equal(128255, Tok.SpecialTokens["<|reserved_special_token_247|>"]);
        Assert.Equal([128001, 128008, 128009], Tok.StopIds);
    }

    [Fact]
    public void DefaultSpecialBase_IsRankCount()
    {
        using Stream ranks = TestTokenizers.OpenCl100kRanks();
        LlamaTokenizer tok = LlamaTokenizer.FromTiktoken(ranks);
        Assert.Equal(100256, tok.RankCount);
        Assert.Equal(100256, tok.BosId);
        Assert.Equal(100256 + 256, tok.VocabSize);
    }

    [Theory]
    [InlineData("<|eot_id|>")]
    [InlineData("Hi<|start_header_id|>assistant<|end_header_id|>\n\nSure<|begin_of_text|>")]
    public void SpecialTokenText_StaysLiteral(string text)
    {
        IReadOnlyList<int> ids = Tok.Encode(text, addBos: false);
        Assert.All(ids, id => Assert.False(Tok.IsSpecial(id), $"special id {id} produced from typed text"));
        Assert.True(ids.Count > 1);
        Assert.Equal(text, Tok.Decode(ids));
    }

    [Theory]
    [InlineData("")]
    [InlineData("Hello, world! It's 2024 and we're testing 1234567 numbers.")]
    [InlineData("  leading and trailing spaces   \n\n\r\n\ttabs")]
    [InlineData("Café naïve résumé 中文字符 日本語 한국어 🦙🎉 👩‍👩‍👧")]
    [InlineData("def f(x):\n    return x ** 2  # comment\n")]
    public void EncodeDecode_RoundTrips(string text)
    {
        Assert.Equal(text, Tok.Decode(Tok.Encode(text, addBos: false)));
    }

    [Fact]
    public void Decode_WritesSpecialNames_AndTokenBytesGivesRawBytes()
    {
        Assert.Equal("<|begin_of_text|>Hello World<|eot_id|>", Tok.Decode([128000, 9906, 4435, 128009]));
        Assert.Equal(Encoding.UTF8.GetBytes("<|eot_id|>"), Tok.TokenBytes(128009));
        Assert.Equal(Encoding.UTF8.GetBytes(" World"), Tok.TokenBytes(4435));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.TokenBytes(110000)); // gap between cl100k ranks and 128000
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.TokenBytes(-1));
    }

    [Fact]
    public void FromDirectory_WithoutTokenizer_SaysWhatWasLookedFor()
    {
        using var dir = new TempDir();
        var ex = Assert.Throws<TokenizerException>(() => LlamaTokenizer.FromDirectory(dir.Path));
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Contains("original/tokenizer.model", ex.Message);
        Assert.Contains("tokenizer.json", ex.Message);
        // Which way around a missing tokenizer exists depends on the command (generate has --tokens,
        // chat has none), so the engine names none and says what it is; the CLI adds the hint where it applies.
        Assert.True(ex.NoTokenizerFile);
        Assert.DoesNotContain("--", CliNames.Message(ex));
    }

    [Fact]
    public void FromDirectory_PrefersOriginalTiktokenFile()
    {
        using var dir = new TempDir();
        IReadOnlyList<byte[]> tiny = TestTokenizers.TinyRanks;
        TiktokenModelWriter.Write(System.IO.Path.Combine(dir.Path, "tokenizer.model"), tiny.Take(300).ToList());
        TiktokenModelWriter.Write(System.IO.Path.Combine(dir.Path, "original", "tokenizer.model"), tiny);
        Assert.Equal(512, LlamaTokenizer.FromDirectory(dir.Path).RankCount);

        Directory.Delete(System.IO.Path.Combine(dir.Path, "original"), recursive: true);
        Assert.Equal(300, LlamaTokenizer.FromDirectory(dir.Path).RankCount);
    }

    [Fact]
    public void FromDirectory_ReadsHuggingFaceJson_WithAddedTokenNames()
    {
        using var dir = new TempDir();
        IReadOnlyList<byte[]> ranks = TestTokenizers.TinyRanks;
        var vocab = new Dictionary<string, int>();
        for (int rank = 0; rank < ranks.Count; rank++)
        {
            vocab.Add(ToByteLevel(ranks[rank]), rank);
        }
        var added = new List<object>
        {
            new { id = 512, content = "<|begin_of_text|>", special = true },
            new { id = 521, content = "<|eot_id|>", special = true },
            new { id = 600, content = "<|my_custom_token|>", special = true },
        };
        string json = JsonSerializer.Serialize(new { version = "1.0", added_tokens = added, model = new { type = "BPE", vocab } });
        File.WriteAllText(System.IO.Path.Combine(dir.Path, "tokenizer.json"), json);

        LlamaTokenizer fromJson = LlamaTokenizer.FromDirectory(dir.Path);
        Assert.Equal(768, fromJson.VocabSize);
        Assert.Equal(600, fromJson.SpecialTokens["<|my_custom_token|>"]);
        Assert.False(fromJson.SpecialTokens.ContainsKey("<|reserved_special_token_80|>")); // the default name at 600
        Assert.Equal(521, fromJson.EotId);

        const string text = "The llama café said: 'hello, 中文 🦙!'";
        Assert.Equal(TestTokenizers.Tiny.Encode(text, addBos: true), fromJson.Encode(text, addBos: true));
        Assert.Equal(text, fromJson.Decode(fromJson.Encode(text, addBos: false)));
    }

    [Fact]
    public void FromDirectory_TiktokenModel_TakesSpecialNamesFromTokenizerJson()
    {
        using var dir = new TempDir();
        TiktokenModelWriter.Write(System.IO.Path.Combine(dir.Path, "original", "tokenizer.model"), TestTokenizers.TinyRanks);
        // Llama 3.0 named slot 4 differently from 3.1; a tokenizer.json beside the model says which release this is.
        File.WriteAllText(System.IO.Path.Combine(dir.Path, "tokenizer.json"),
            """{"added_tokens":[{"id":512,"content":"<|begin_of_text|>"},{"id":516,"content":"<|reserved_special_token_2|>"}]}""");

        LlamaTokenizer tok = LlamaTokenizer.FromDirectory(dir.Path);
        Assert.Equal(512, tok.RankCount);
        Assert.Equal(516, tok.SpecialTokens["<|reserved_special_token_2|>"]);
        Assert.False(tok.SpecialTokens.ContainsKey("<|finetune_right_pad_id|>"));
        Assert.Equal(521, tok.EotId);
    }

    [Fact]
    public void FromDirectory_RejectsSentencePieceModel_WithOneLine()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(System.IO.Path.Combine(dir.Path, "tokenizer.model"), [0x0A, 0x0B, 0x0A, 0x05, 0x3C, 0x75, 0x6E, 0x6B, 0x3E, 0x15, 0x00, 0x00]);
        var ex = Assert.Throws<TokenizerException>(() => LlamaTokenizer.FromDirectory(dir.Path));
        Assert.Contains("tokenizer.model", ex.Message);
        Assert.Contains("SentencePiece", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void FromTiktoken_RejectsDuplicateTokens()
    {
        using var stream = new MemoryStream(Encoding.ASCII.GetBytes("YQ== 0\nYg== 1\nYQ== 2\n"));
        Assert.Throws<TokenizerException>(() => LlamaTokenizer.FromTiktoken(stream));
    }

    private static string ToByteLevel(byte[] bytes)
    {
        // GPT-2's bytes_to_unicode, written out independently of the production table.
        var printable = new HashSet<int>();
        for (int b = '!'; b <= '~'; b++) printable.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) printable.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) printable.Add(b);
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++) map[b] = printable.Contains(b) ? (char)b : (char)(256 + n++);
        return new string(bytes.Select(b => map[b]).ToArray());
    }
}

/// <summary>A temporary directory removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "ilgpullama-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

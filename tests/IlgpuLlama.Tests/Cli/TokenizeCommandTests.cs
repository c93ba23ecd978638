using System.Text;
using System.Text.Json;
using IlgpuLlama.Tests.Text;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Cli;

/// <summary>
/// A model directory laid out like Llama 3's: cl100k_base ranks (Llama 3's first 100,256 ranks) as
/// tokenizer.model and a tokenizer.json naming the 256 special tokens at 128000..128255, so ids are
/// real Llama 3 ids for text those ranks cover.
/// </summary>
public sealed class Llama3LayoutTokenizerDir : IDisposable
{
    public Llama3LayoutTokenizerDir()
    {
        Path = CliHarness.TempDir();
        using (var ranks = TestTokenizers.OpenCl100kRanks())
        using (var file = File.Create(System.IO.Path.Combine(Path, "tokenizer.model")))
            ranks.CopyTo(file);
        var added = Llama3Vocabulary.DefaultSpecialTokens(Llama3Vocabulary.Llama3RankCount)
            .Select(kv => new { id = kv.Value, content = kv.Key, special = true });
        File.WriteAllText(System.IO.Path.Combine(Path, "tokenizer.json"), JsonSerializer.Serialize(new { added_tokens = added }));
    }

    public string Path { get; }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>tokenize and detokenize through the CLI entry point.</summary>
public sealed class TokenizeCommandTests(Llama3LayoutTokenizerDir model) : IClassFixture<Llama3LayoutTokenizerDir>
{
    string Dir => model.Path;

    static (int[] Ids, string[] Tokens) ParseJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return (doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            doc.RootElement.GetProperty("tokens").EnumerateArray().Select(e => e.GetString()!).ToArray());
    }

    [Fact]
    public void Json_has_ids_and_hugging_face_token_strings()
    {
        var r = CliHarness.Run("tokenize", "--model", Dir, "--text", "Hello World", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        var (ids, tokens) = ParseJson(r.Out);
        Assert.Equal([128000, 9906, 4435], ids);
        Assert.Equal(["<|begin_of_text|>", "Hello", "ĠWorld"], tokens);
        Assert.Contains("3 tokens", r.Err);

        r = CliHarness.Run("tokenize", "--model", Dir, "--text", "Hello World", "--json", "--no-bos");
        Assert.Equal([9906, 4435], ParseJson(r.Out).Ids);
    }

    [Fact]
    public void Hard_strings_give_the_reference_ids()
    {
        // All of them in one run (loading the ranks is the slow part); the reference sees the same text.
        string text = string.Join("\n", ((IEnumerable<object[]>)Llama3ReferenceTokenizerTests.HardStrings).Select(row => (string)row[0]));
        var r = CliHarness.Run("tokenize", "--model", Dir, "--text", text, "--json", "--no-bos");
        Assert.True(r.ExitCode == 0, r.Err);
        var (ids, tokens) = ParseJson(r.Out);
        Assert.Equal(Llama3ReferenceTokenizerTests.ReferenceEncode(text), ids);
        Assert.Equal(ids.Length, tokens.Length);
    }

    [Fact]
    public void Special_token_text_stays_literal_unless_special()
    {
        const string text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
        var literal = ParseJson(CliHarness.Run("tokenize", "--model", Dir, "--text", text, "--json", "--no-bos").Out).Ids;
        Assert.All(literal, id => Assert.True(id < 100256, $"special id {id} from literal text"));
        Assert.Equal(Llama3ReferenceTokenizerTests.ReferenceEncode(text), literal);

        var parsed = ParseJson(CliHarness.Run("tokenize", "--model", Dir, "--text", text, "--json", "--no-bos", "--special").Out).Ids;
        int[] expected = [128006, .. Llama3ReferenceTokenizerTests.ReferenceEncode("user"), 128007,
            .. Llama3ReferenceTokenizerTests.ReferenceEncode("\n\nHi"), 128009];
        Assert.Equal(expected, parsed);
    }

    [Fact]
    public void Text_output_is_one_visible_token_per_line()
    {
        // "é" is one rank, but "🦙" is split into tokens that each hold part of its four bytes.
        var r = CliHarness.Run("tokenize", "--model", Dir, "--text", "a\tb\n\n 🦙", "--no-bos");
        Assert.True(r.ExitCode == 0, r.Err);
        string[] lines = r.Out.TrimEnd('\n').Split('\n');
        var tok = TestTokenizers.Cl100kAsLlama3;
        var ids = tok.Encode("a\tb\n\n 🦙", addBos: false);
        Assert.Equal(ids.Count, lines.Length);
        for (int i = 0; i < ids.Count; i++)
            Assert.Matches($@"^\s*{ids[i]}  "".*""$", lines[i]);
        Assert.Contains(lines, l => l.EndsWith("\"\\t\"", StringComparison.Ordinal) || l.Contains("\\t"));
        Assert.Contains(lines, l => l.Contains("\\n\\n"));
        Assert.Contains(lines, l => l.Contains("\\xF0"));
        Assert.DoesNotContain('\t', r.Out);

        r = CliHarness.Run("tokenize", "--model", Dir, "--text", "x");
        Assert.Equal("128000  <|begin_of_text|>  (special)", r.Out.Split('\n')[0].Trim());
    }

    [Fact]
    public void File_and_standard_input_are_read_as_utf8()
    {
        string dir = CliHarness.TempDir();
        try
        {
            string path = Path.Combine(dir, "in.txt");
            File.WriteAllBytes(path, [.. Encoding.UTF8.Preamble, .. Encoding.UTF8.GetBytes("Grüße 中文\n")]);
            int[] expected = Llama3ReferenceTokenizerTests.ReferenceEncode("Grüße 中文\n");
            Assert.Equal(expected, ParseJson(CliHarness.Run("tokenize", "--model", Dir, "--file", path, "--json", "--no-bos").Out).Ids);

            var o = new StringWriter();
            var e = new StringWriter();
            int code = IlgpuLlama.Cli.Program.Run(["tokenize", "--model", Dir, "--file", "-", "--json", "--no-bos"], new StringReader("Grüße 中文\n"), o, e);
            Assert.True(code == 0, e.ToString());
            Assert.Equal(expected, ParseJson(o.ToString()).Ids);

            File.WriteAllBytes(path, [0x61, 0x62, 0xFF, 0x63]);
            var r = CliHarness.Run("tokenize", "--model", Dir, "--file", path);
            Assert.Equal(1, r.ExitCode);
            Assert.Equal($"error: --file '{path}' is not valid UTF-8 at byte 2; convert it first (e.g. iconv -t UTF-8)", r.Err.Trim());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Detokenize_writes_the_text_and_special_tokens_only_with_special()
    {
        const string text = "Café 🦙 中文\n  code();";
        int[] ids = [128000, .. Llama3ReferenceTokenizerTests.ReferenceEncode(text), 128009];
        string list = string.Join(",", ids);
        var r = CliHarness.Run("detokenize", "--model", Dir, "--ids", list);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Equal(text, r.Out);

        r = CliHarness.Run("detokenize", "--model", Dir, "--ids", list, "--special");
        Assert.Equal("<|begin_of_text|>" + text + "<|eot_id|>", r.Out);

        // tokenize --json's list pastes as is.
        r = CliHarness.Run("detokenize", "--model", Dir, "--ids", "[9906, 4435]");
        Assert.Equal("Hello World", r.Out);
    }

    [Theory]
    [InlineData("1,x", "--ids: 'x' is not a token id")]
    [InlineData("110000", "--ids: 110000 is not a token of this tokenizer")]
    [InlineData("-5", "--ids: -5 is not a token of this tokenizer")]
    [InlineData(",", "--ids is empty")]
    public void Detokenize_bad_ids_fail_with_one_line(string ids, string message)
    {
        var r = CliHarness.Run("detokenize", "--model", Dir, "--ids", ids);
        Assert.Equal(1, r.ExitCode);
        string line = Assert.Single(r.Err.Trim().Split('\n'));
        Assert.StartsWith("error: " + message, line);
        Assert.Equal("", r.Out);
    }

    [Theory]
    [InlineData("tokenize", "--model", "DIR")]
    [InlineData("tokenize", "--model", "DIR", "--text", "a", "--file", "b")]
    [InlineData("detokenize", "--model", "DIR")]
    public void Usage_errors_exit_2(params string[] args)
    {
        var r = CliHarness.Run(args.Select(a => a == "DIR" ? Dir : a).ToArray());
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void Missing_inputs_fail_with_one_clear_line()
    {
        string empty = CliHarness.TempDir();
        try
        {
            var r = CliHarness.Run("tokenize", "--model", empty, "--text", "hi");
            Assert.Equal(1, r.ExitCode);
            Assert.Matches("^error: No tokenizer in '.*': looked for original/tokenizer.model, tokenizer.model and tokenizer.json", r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));

            r = CliHarness.Run("tokenize", "--model", Dir, "--file", Path.Combine(empty, "missing.txt"));
            Assert.Equal(1, r.ExitCode);
            Assert.StartsWith("error: --file '", r.Err);
            Assert.Contains("does not exist", r.Err);
        }
        finally
        {
            Directory.Delete(empty, recursive: true);
        }
    }
}

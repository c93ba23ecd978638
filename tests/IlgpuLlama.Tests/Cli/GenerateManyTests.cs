using System.Text.Json;
using IlgpuLlama.Cli;
using IlgpuLlama.Tests.Constraints;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Cli;

/// <summary>generate with more prompts than KV slots, prompt files, JSONL and stop strings.</summary>
public sealed class GenerateManyTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    static string Tokens(IEnumerable<int> ids) => string.Join(",", ids);

    static IEnumerable<JsonElement> Sequences(string json) => JsonDocument.Parse(json).RootElement.GetProperty("sequences").EnumerateArray().Select(e => e.Clone());

    [Fact]
    public void Five_token_prompts_through_two_slots_each_reproduce_the_reference()
    {
        var cases = GoldenFixture.Cases;
        int[] order = [0, 1, 2, 3, 1];
        var args = new List<string> { "generate", "--model", GoldenFixture.Directory, "--temperature", "0", "--max-new-tokens", "16", "--ignore-eos",
            "--max-batch-size", "2", "--max-seq-len", "96", "--device", "cpu", "--json" };
        foreach (int i in order)
            args.AddRange(["--tokens", Tokens(cases[i].Prompt)]);
        var r = CliHarness.Run([.. args]);
        Assert.True(r.ExitCode == 0, r.Err);
        var seqs = Sequences(r.Out).ToList();
        Assert.Equal(order.Length, seqs.Count);
        for (int k = 0; k < order.Length; k++)
        {
            Assert.Equal(cases[order[k]].Prompt, seqs[k].GetProperty("prompt_tokens").EnumerateArray().Select(e => e.GetInt32()));
            GoldenModelTests.AssertGreedyMatches(cases[order[k]], seqs[k].GetProperty("generated_tokens").EnumerateArray().Select(e => e.GetInt32()).ToList(), new NullOutput());
        }
        Assert.Equal(seqs[1].GetProperty("generated_tokens").ToString(), seqs[4].GetProperty("generated_tokens").ToString());
        Assert.Contains("5/5 prompts", r.Err);
    }

    [Fact]
    public void A_prompts_file_gives_one_result_per_line_in_input_order_equal_to_each_prompt_alone_and_stop_cuts_the_text()
    {
        string[] common = ["--model", demo.Path, "--temperature", "0", "--max-new-tokens", "10", "--ignore-eos", "--max-seq-len", "128", "--device", "cpu"];
        var alone = CliHarness.Run(["generate", .. common, "--prompt", "Hello world", "--prompt", "The numbers", "--json"]);
        Assert.True(alone.ExitCode == 0, alone.Err);
        var texts = Sequences(alone.Out).Select(s => s.GetProperty("text").GetString()!).ToArray();

        string dir = CliHarness.TempDir();
        try
        {
            string file = Path.Combine(dir, "prompts.jsonl");
            File.WriteAllLines(file, ["{\"prompt\": \"Hello world\"}", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}", "", "{\"prompt\": \"The numbers\"}"]);
            var r = CliHarness.Run(["generate", .. common, "--prompts-file", file, "--max-batch-size", "2"]);
            Assert.True(r.ExitCode == 0, r.Err);
            var lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
            Assert.Equal([0, 1, 2], lines.Select(l => l.GetProperty("index").GetInt32()));
            Assert.Equal(texts[0], lines[0].GetProperty("text").GetString());
            Assert.Equal(texts[1], lines[2].GetProperty("text").GetString());
            Assert.All(lines, l => Assert.Equal(10, l.GetProperty("completion_tokens").GetInt32()));

            File.WriteAllLines(file, ["{\"prompt\": \"ok\"}", "{\"text\": \"no\"}"]);
            r = CliHarness.Run(["generate", .. common, "--prompts-file", file]);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains($"error: --prompts-file {file} line 2: expected {{\"prompt\": \"...\"}} or {{\"messages\": [...]}}", r.Err);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        // The same prompt from stdin, stopped at a piece of its own continuation.
        string stop = texts[0].Substring(3, 2);
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(["generate", .. common, "--prompt-file", "-", "--stop", stop, "--json"], new StringReader("Hello world"), o, e);
        Assert.True(code == 0, e.ToString());
        var stopped = Sequences(o.ToString()).Single();
        Assert.Equal(texts[0][..texts[0].IndexOf(stop, StringComparison.Ordinal)], stopped.GetProperty("text").GetString());
        Assert.Equal("stop", stopped.GetProperty("finish_reason").GetString());
    }

    sealed class NullOutput : Xunit.Abstractions.ITestOutputHelper
    {
        public void WriteLine(string message) { }
        public void WriteLine(string format, params object[] args) { }
    }

    /// <summary>generate --json-schema FILE / --json-object: every output, sampled, parses and validates; bad schemas and conflicting flags are one line each.</summary>
    [Fact]
    public void Json_schema_and_json_object_constrain_every_output_and_bad_input_is_one_line()
    {
        const string schema = """{"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"], "additionalProperties": false}""";
        string dir = CliHarness.TempDir();
        try
        {
            string file = Path.Combine(dir, "schema.json");
            File.WriteAllText(file, schema);
            string[] common = ["generate", "--model", demo.Path, "--temperature", "1", "--seed", "9", "--max-new-tokens", "40", "--max-seq-len", "128", "--device", "cpu", "--json",
                "--prompt", "Weather?", "--prompt", "Oslo", "--prompt", "Three days"];
            var r = CliHarness.Run([.. common, "--json-schema", file]);
            Assert.True(r.ExitCode == 0, r.Err);
            foreach (var s in Sequences(r.Out))
                JsonOracle.AssertValid(schema, s.GetProperty("text").GetString()!);
            var o = CliHarness.Run([.. common, "--json-object"]);
            Assert.True(o.ExitCode == 0, o.Err);
            foreach (var s in Sequences(o.Out))
                Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(s.GetProperty("text").GetString()!).RootElement.ValueKind);

            // One prompt streams the JSON alone (no echo of the prompt), so stdout parses.
            var single = CliHarness.Run(["generate", "--model", demo.Path, "--temperature", "1", "--seed", "9", "--max-new-tokens", "40", "--max-seq-len", "128", "--device", "cpu",
                "--prompt", "Weather?", "--json-schema", file]);
            Assert.True(single.ExitCode == 0, single.Err);
            JsonOracle.AssertValid(schema, single.Out.Trim());

            File.WriteAllText(file, """{"type": "string", "pattern": "^a"}""");
            var bad = CliHarness.Run([.. common, "--json-schema", file]);
            Assert.Equal(1, bad.ExitCode);
            Assert.Contains($"error: --json-schema {file}: unsupported JSON Schema keywords: pattern (at /)", bad.Err);
            var missing = CliHarness.Run([.. common, "--json-schema", Path.Combine(dir, "none.json")]);
            Assert.Contains("does not exist; give a file holding a JSON schema", missing.Err);
            var both = CliHarness.Run([.. common, "--json-object", "--ignore-eos"]);
            Assert.Contains("leave out --ignore-eos", both.Err);
            File.WriteAllText(file, schema);
            var few = CliHarness.Run(["generate", "--model", demo.Path, "--max-new-tokens", "5", "--device", "cpu", "--json-schema", file]);
            Assert.Contains("--max-new-tokens 5 is too few for the schema: its shortest JSON text has 20 bytes", few.Err);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}

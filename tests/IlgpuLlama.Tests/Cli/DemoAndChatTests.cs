using System.Diagnostics;
using System.Text.Json;
using IlgpuLlama.Cli;
using IlgpuLlama.Cli.Commands;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Engine;

namespace IlgpuLlama.Tests.Cli;

/// <summary>The built-in demo directory, written once into a temporary folder for the tests that pass it as --model.</summary>
public sealed class DemoModelDir : IDisposable
{
    readonly string _root = CliHarness.TempDir();

    public DemoModelDir() => Path = DemoModel.Ensure(_root);

    public string Path { get; }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}

/// <summary>What a new user sees: the demo's first run, special tokens in the output, chat's model choice and commands.</summary>
public sealed class DemoAndChatTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    // The demo's special tokens follow its 512 ranks.
    const int FirstSpecialId = 512;

    [Fact]
    public void First_demo_run_is_greedy_reproducible_and_says_what_it_is()
    {
        // A real first run: a fresh working directory without weights/, the CLI as its own process.
        string cwd = CliHarness.TempDir();
        try
        {
            var first = RunCli(cwd, "generate", "--device", "cpu", "--max-new-tokens", "12");
            var second = RunCli(cwd, "generate", "--device", "cpu", "--max-new-tokens", "12");
            Assert.True(first.ExitCode == 0, first.Err);
            Assert.True(second.ExitCode == 0, second.Err);
            Assert.True(File.Exists(Path.Combine(cwd, "weights", DemoModel.DirectoryName, "model.safetensors")));
            Assert.StartsWith(GenerateCommand.DefaultPrompt, first.Out);
            Assert.Equal(first.Out, second.Out);
            Assert.DoesNotContain("<|", first.Out);
            string notice = Assert.Single(first.Err.Split('\n'), l => l.StartsWith("demo:", StringComparison.Ordinal));
            Assert.Contains("random weights", notice);
            Assert.Contains($"greedy decoding with seed {GenerateCommand.DemoSeed}", notice);
            Assert.DoesNotContain("\nseed:", first.Err);
            Assert.DoesNotContain("subnormal", first.Err); // the demo's weights are all fp16 normals or zero

            // A sampling flag means the user chose sampling: no greedy override, the seed is reported.
            var sampled = RunCli(cwd, "generate", "--device", "cpu", "--max-new-tokens", "4", "--temperature", "1", "--seed", "7");
            Assert.True(sampled.ExitCode == 0, sampled.Err);
            Assert.DoesNotContain("greedy", Assert.Single(sampled.Err.Split('\n'), l => l.StartsWith("demo:", StringComparison.Ordinal)));
            Assert.Contains("seed: 7", sampled.Err);
        }
        finally
        {
            Directory.Delete(cwd, recursive: true);
        }
    }

    [Fact]
    public void Generated_special_tokens_print_only_with_special()
    {
        // Hot sampling on random weights picks special tokens often; the seed makes the run repeatable.
        string[] args = ["generate", "--model", demo.Path, "--device", "cpu", "--temperature", "3", "--top-k", "0", "--top-p", "1", "--seed", "11",
            "--max-new-tokens", "40", "--ignore-eos", "--max-seq-len", "64"];
        var json = CliHarness.Run([.. args, "--json"]);
        Assert.True(json.ExitCode == 0, json.Err);
        using var doc = JsonDocument.Parse(json.Out);
        var seq = doc.RootElement.GetProperty("sequences")[0];
        int specials = seq.GetProperty("generated_tokens").EnumerateArray().Count(t => t.GetInt32() >= FirstSpecialId);
        Assert.True(specials > 0, "the premise: this run generates special tokens");
        Assert.DoesNotContain("<|", seq.GetProperty("text").GetString());

        var withSpecial = CliHarness.Run([.. args, "--json", "--special"]);
        using var doc2 = JsonDocument.Parse(withSpecial.Out);
        Assert.Contains("<|", doc2.RootElement.GetProperty("sequences")[0].GetProperty("text").GetString());

        var streamed = CliHarness.Run(args);
        Assert.True(streamed.ExitCode == 0, streamed.Err);
        Assert.DoesNotContain("<|", streamed.Out);
        Assert.Contains("<|", CliHarness.Run([.. args, "--special"]).Out);
    }

    [Fact]
    public void Chat_prefers_the_instruct_model_then_the_base_model()
    {
        string root = CliHarness.TempDir();
        try
        {
            Assert.Null(ModelOptions.FindDefaultModelDir(root, ModelOptions.ChatModelDirs));

            string baseModel = Path.Combine(root, ModelOptions.DefaultModelDir);
            Directory.CreateDirectory(baseModel);
            File.WriteAllText(Path.Combine(baseModel, "config.json"), "{}");
            Assert.Equal(baseModel, ModelOptions.FindDefaultModelDir(root, ModelOptions.ChatModelDirs));

            // A directory without config.json is an unfinished download, not a model.
            string instruct = Path.Combine(root, ModelOptions.InstructModelDir);
            Directory.CreateDirectory(instruct);
            Assert.Equal(baseModel, ModelOptions.FindDefaultModelDir(root, ModelOptions.ChatModelDirs));

            File.WriteAllText(Path.Combine(instruct, "config.json"), "{}");
            Assert.Equal(instruct, ModelOptions.FindDefaultModelDir(root, ModelOptions.ChatModelDirs));
            Assert.Equal(baseModel, ModelOptions.FindDefaultModelDir(root, [ModelOptions.DefaultModelDir]));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData(null, ChatCommand.LineKind.Exit, "")]
    [InlineData("/exit", ChatCommand.LineKind.Exit, "")]
    [InlineData("  /QUIT ", ChatCommand.LineKind.Exit, "")]
    [InlineData("/reset", ChatCommand.LineKind.Reset, "")]
    [InlineData("/help", ChatCommand.LineKind.Help, "")]
    [InlineData("/model big", ChatCommand.LineKind.Help, "/model big")]
    [InlineData("/", ChatCommand.LineKind.Help, "/")]
    [InlineData("   ", ChatCommand.LineKind.Empty, "")]
    [InlineData("hello /reset", ChatCommand.LineKind.Message, "hello /reset")]
    [InlineData("//etc/hosts is a file", ChatCommand.LineKind.Message, "/etc/hosts is a file")]
    public void Chat_lines_are_classified(string? line, ChatCommand.LineKind kind, string text)
    {
        Assert.Equal((kind, text), ChatCommand.ClassifyLine(line));
    }

    [Fact]
    public void Chat_answers_an_unknown_command_with_help_instead_of_the_model()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(["chat", "--model", demo.Path, "--device", "cpu", "--max-new-tokens", "3", "--date", "2024-07-26"],
            new StringReader("/bogus\nhello\n/help\n"), output, error);
        string err = error.ToString();
        Assert.True(code == 0, err);
        string[] lines = err.Split('\n');
        Assert.Contains($"unknown command /bogus; {ChatCommand.CommandHelp}", lines);
        Assert.Contains(ChatCommand.CommandHelp, lines);
        // Only "hello" reached the model: one reply, one speed line.
        Assert.Single(lines, l => l.Contains("tok/s", StringComparison.Ordinal));
    }

    /// <summary>tokenize and detokenize fall back to the demo like generate (issue 23), and round-trip through --json.</summary>
    [Fact]
    public void Tokenize_and_detokenize_fall_back_to_the_demo()
    {
        string cwd = CliHarness.TempDir();
        try
        {
            var t = RunCli(cwd, "tokenize", "--text", "Hello 🦙", "--json", "--no-bos");
            Assert.True(t.ExitCode == 0, t.Err);
            Assert.Contains("demo:", t.Err);
            Assert.Contains("tokenizer", Assert.Single(t.Err.Split('\n'), l => l.StartsWith("demo:", StringComparison.Ordinal)));
            // Characters, not UTF-16 code units: the llama is one character (two UTF-16 units).
            Assert.Contains(" tokens, 7 characters", t.Err);
            using var doc = System.Text.Json.JsonDocument.Parse(t.Out);
            var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var d = RunCli(cwd, "detokenize", "--ids", string.Join(",", ids), "--json");
            Assert.True(d.ExitCode == 0, d.Err);
            using var back = System.Text.Json.JsonDocument.Parse(d.Out);
            Assert.Equal("Hello 🦙", back.RootElement.GetProperty("text").GetString());
            Assert.Equal(ids, back.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
        }
        finally
        {
            Directory.Delete(cwd, recursive: true);
        }
    }

    static CliHarness.Result RunCli(string workingDirectory, params string[] args)
    {
        // DOTNET_HOST_PATH is the dotnet that runs the tests; the CLI assembly is copied beside them.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "ilgpu-llama.dll"));
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"ilgpu-llama {string.Join(' ', args)} ran over 5 minutes");
        }
        return new CliHarness.Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}

using System.CommandLine;
using IlgpuLlama.Cli;
using IlgpuLlama.Cli.Infrastructure;

namespace IlgpuLlama.Tests.Cli;

/// <summary>Short flags (-m, -p, -n, ...): one letter per concept on every command, and they run the real commands.</summary>
public sealed class ShortAliasTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    static IEnumerable<Command> AllCommands(Command c) => c.Subcommands.SelectMany(AllCommands).Prepend(c);

    [Fact]
    public void Every_command_with_a_common_flag_takes_its_short_form_and_no_letter_means_two_things()
    {
        var root = Program.BuildRoot();
        int applied = 0;
        foreach (var command in AllCommands(root))
        {
            foreach (var option in command.Options)
            {
                if (CliOptions.ShortAliases.TryGetValue(option.Name, out var alias))
                {
                    Assert.True(option.Aliases.Contains(alias), $"{command.Name} {option.Name} lacks {alias}");
                    applied++;
                }
                // A short letter from the table is only ever the alias of its own flag.
                foreach (var a in option.Aliases.Where(CliOptions.ShortAliases.Values.Contains))
                    Assert.Equal(a, CliOptions.ShortAliases[option.Name]);
            }
        }
        // --model alone is on most commands; the table is not dead.
        Assert.True(applied >= 10, $"only {applied} options got a short form");
        Assert.Contains(root.Subcommands.Single(c => c.Name == "generate").Options, o => o.Aliases.Contains("-p"));
        Assert.Contains(root.Subcommands.Single(c => c.Name == "perplexity").Options, o => o.Name == "--ctx" && o.Aliases.Contains("-c"));
    }

    [Fact]
    public void Short_flags_give_the_same_output_as_long_ones()
    {
        string file = Path.Combine(Path.GetDirectoryName(demo.Path)!, "alias-text.txt");
        File.WriteAllText(file, "Hello world, hello model.");
        var longForm = CliHarness.Run("tokenize", "--model", demo.Path, "--file", file, "--json");
        var shortForm = CliHarness.Run("tokenize", "-m", demo.Path, "-f", file, "--json");
        Assert.True(longForm.ExitCode == 0, longForm.Err);
        Assert.Equal(longForm.Out, shortForm.Out);

        string[] common = ["--device", "cpu", "--max-seq-len", "32", "--temperature", "1", "--json"];
        var generateLong = CliHarness.Run(["generate", "--model", demo.Path, "--prompt", "Hello", "--max-new-tokens", "3", "--seed", "5", .. common]);
        var generateShort = CliHarness.Run(["generate", "-m", demo.Path, "-p", "Hello", "-n", "3", "-s", "5", .. common]);
        Assert.True(generateLong.ExitCode == 0, generateLong.Err);
        Assert.True(generateShort.ExitCode == 0, generateShort.Err);
        // Timings differ between runs; the sequences (prompt, sampled tokens, text) must not.
        static string Sequences(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("sequences").GetRawText();
        Assert.Equal(Sequences(generateLong.Out), Sequences(generateShort.Out));
        Assert.Contains("\"seed\": 5", generateShort.Out);
    }

    /// <summary>llama.cpp's spellings typed by habit: the same meaning is an alias, another meaning one line saying what to use (issue 23).</summary>
    [Fact]
    public void Llama_cpp_flags_are_aliases_or_one_line_saying_what_to_use()
    {
        string[] common = ["--device", "cpu", "--json", "--seed", "5"];
        var ours = CliHarness.Run(["generate", "--model", demo.Path, "--prompt", "Hello", "--max-new-tokens", "3", "--max-seq-len", "32", "--temperature", "0.5", .. common]);
        var habit = CliHarness.Run(["generate", "--model", demo.Path, "--prompt", "Hello", "--n-predict", "3", "--ctx-size", "32", "--temp", "0.5", .. common]);
        Assert.True(ours.ExitCode == 0, ours.Err);
        Assert.True(habit.ExitCode == 0, habit.Err);
        static string Sequences(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("sequences").GetRawText();
        Assert.Equal(Sequences(ours.Out), Sequences(habit.Out));

        foreach (var args in new[] { new[] { "--threads", "4" }, ["-t", "4"], ["-ngl", "99"], ["--n-gpu-layers", "99"] })
        {
            var r = CliHarness.Run(["generate", "--model", demo.Path, .. args]);
            Assert.Equal(2, r.ExitCode);
            string line = Assert.Single(r.Err.TrimEnd('\n').Split('\n'));
            Assert.StartsWith($"error: {args[0]} is a llama.cpp flag this engine does not have: ", line);
        }
        // Inside a prompt such text is text.
        var prompt = CliHarness.Run(["generate", "--model", demo.Path, "--prompt", "-t", "--max-new-tokens", "1", "--device", "cpu"]);
        Assert.True(prompt.ExitCode == 0, prompt.Err);
    }
}

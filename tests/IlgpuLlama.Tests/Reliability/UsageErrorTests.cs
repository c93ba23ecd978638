using System.CommandLine;
using IlgpuLlama.Cli;
using IlgpuLlama.Tests.Cli;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// Values that do not parse are usage errors: one line <c>error: ...</c> on stderr, exit 2, no help
/// dump, nothing on stdout; <c>--help</c> still prints the help. Every numeric option of every command
/// is tried, so an option added later with a validator that reads an unconverted value fails here.
/// </summary>
public sealed class UsageErrorTests
{
    /// <summary>(command path, option name, value type) of every numeric option in the command tree.</summary>
    public static TheoryData<string, string, bool> NumericOptions()
    {
        var data = new TheoryData<string, string, bool>();
        void Walk(Command command, string path)
        {
            foreach (var option in command.Options)
            {
                var t = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
                if (t == typeof(int) || t == typeof(long) || t == typeof(ulong))
                    data.Add(path, option.Name, true);
                else if (t == typeof(float) || t == typeof(double))
                    data.Add(path, option.Name, false);
            }
            foreach (var sub in command.Subcommands)
                Walk(sub, (path + " " + sub.Name).Trim());
        }
        Walk(Program.BuildRoot(), "");
        return data;
    }

    [Fact]
    public void The_tree_has_the_numeric_options_the_issue_lists()
    {
        var all = NumericOptions().Select(row => $"{row[0]} {row[1]}").ToHashSet();
        foreach (string expected in new[]
                 {
                     "generate --max-new-tokens", "generate --max-seq-len", "generate --max-batch-size", "generate --prefill-chunk",
                     "bench kernels --repeats", "bench kernels --warmup", "bench e2e --repeats", "chat --max-new-tokens", "generate --temperature",
                 })
            Assert.Contains(expected, all);
    }

    [Theory]
    [MemberData(nameof(NumericOptions))]
    public void A_value_that_does_not_parse_is_one_usage_error_line(string command, string option, bool integral)
    {
        string[] bad = integral ? ["abc", "1.5", "1e3", "99999999999999999999999", "", "0x10"] : ["abc", "1.5x", "", "1,5", "NaN", "Infinity", "1e39"];
        foreach (string value in bad)
        {
            var args = command.Split(' ').Append(option).Append(value).ToArray();
            var r = CliHarness.Run(args);
            Assert.True(r.ExitCode == 2, $"{string.Join(' ', args)}: exit {r.ExitCode}\n{r.Err}");
            AssertOneUsageLine(r, option);
        }
    }

    [Theory]
    [InlineData("--max-new-tokens", "1.5")]
    [InlineData("--max-new-tokens", "99999999999")]
    [InlineData("--max-new-tokens", "0")]
    [InlineData("--max-seq-len", "-3")]
    [InlineData("--max-batch-size", "65")]
    [InlineData("--prefill-chunk", "0")]
    public void Integer_options_say_what_range_they_take(string option, string value)
    {
        var r = CliHarness.Run("generate", option, value);
        Assert.Equal(2, r.ExitCode);
        string line = AssertOneUsageLine(r, option);
        Assert.Contains("between", line);
        Assert.Contains(value, line);
    }

    [Theory]
    [InlineData("bench", "e2e", "--model", "llama-3.2-1b", "--repeats", "0")]
    [InlineData("bench", "kernels", "--warmup", "-1")]
    [InlineData("memory", "--model", "llama-3.2-1b", "--batch", "0")]
    public void Out_of_range_counts_are_refused_not_run_once(params string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.Equal(2, r.ExitCode);
        AssertOneUsageLine(r, args[^2]);
    }

    [Fact]
    public void Help_still_prints_the_help()
    {
        var r = CliHarness.Run("generate", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("Usage:", r.Out);
        Assert.Contains("--max-new-tokens", r.Out);
        // --device's default as the docs and the flag spell it (issue 23), not the enum's name.
        Assert.Contains("[default: auto]", r.Out);
        Assert.DoesNotContain("Auto]", r.Out);
    }

    /// <summary>A value outside a list of choices is one line listing them, comma-separated, without tabs.</summary>
    [Fact]
    public void A_choice_error_lists_the_values_on_one_line_without_tabs()
    {
        var r = CliHarness.Run("generate", "--dtype", "foo");
        string line = AssertOneUsageLine(r, "'foo'");
        Assert.DoesNotContain('\t', line);
        Assert.Contains("'fp16', 'bf16', 'q8_0', 'q4_0'", line);
    }

    [Fact]
    public void A_bare_invocation_prints_the_help_as_a_usage_error()
    {
        var r = CliHarness.Run();
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("Usage:", r.Err);
        Assert.Equal("", r.Out);
    }

    static string AssertOneUsageLine(CliHarness.Result r, string mentions)
    {
        Assert.Equal("", r.Out);
        string line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains(mentions, line);
        Assert.DoesNotContain("Usage:", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        return line;
    }
}

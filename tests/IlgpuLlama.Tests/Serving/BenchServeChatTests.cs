using System.Text.Json;
using IlgpuLlama.Tests.Cli;

namespace IlgpuLlama.Tests.Serving;

/// <summary>bench serve --scenario chat (issue 22 item 4): growing conversations, time to first token per turn with and without prefix reuse.</summary>
public sealed class BenchServeChatTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    [Fact]
    public void The_chat_scenario_reports_each_turn_with_and_without_prefix_reuse()
    {
        var r = CliHarness.Run("bench", "serve", "--model", demo.Path, "--device", "cpu", "--max-batch-size", "2", "--scenario", "chat",
            "--clients", "2", "--turns", "3", "--max-tokens", "3", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        var report = JsonDocument.Parse(r.Out).RootElement;
        Assert.Equal(2, report.GetProperty("clients").GetInt32());
        var runs = report.GetProperty("runs").EnumerateArray().ToArray();
        Assert.Equal([true, false], runs.Select(run => run.GetProperty("prefix_reuse").GetBoolean()));
        foreach (var run in runs)
        {
            var turns = run.GetProperty("turns").EnumerateArray().ToArray();
            Assert.Equal([1, 2, 3], turns.Select(t => t.GetProperty("turn").GetInt32()));
            foreach (var t in turns)
            {
                Assert.Equal(2, t.GetProperty("requests").GetInt32());
                Assert.Equal(0, t.GetProperty("failed").GetInt32());
                Assert.True(t.GetProperty("ttft_p50_ms").GetDouble() > 0);
            }
            // Each turn's prompt is the conversation so far: it grows.
            var prompts = turns.Select(t => t.GetProperty("prompt_tokens_p50").GetInt32()).ToArray();
            Assert.True(prompts[0] > 0 && prompts[1] > prompts[0] && prompts[2] > prompts[1], string.Join(",", prompts));
        }
    }

    [Fact]
    public void Structured_output_runs_report_the_mask_cost_per_step()
    {
        var r = CliHarness.Run("bench", "serve", "--model", demo.Path, "--device", "cpu", "--max-batch-size", "2", "--concurrency", "2",
            "--requests", "2", "--max-tokens", "12", "--response-format", "json_object");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("response_format json_object", r.Out);
        Assert.Matches(@"structured-output mask in this run: \d+\.\d{3} ms per step over \d+ steps", r.Out);
        Assert.Contains("structured-output mask on this vocabulary: json mask:", r.Out);
    }
}

using System.Text.Json;

namespace IlgpuLlama.Tests.Cli;

/// <summary>memory's rule of thumb from the model's own size, units, and the JSON conventions (enum names, null for "none").</summary>
public sealed class MemoryReportTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    static JsonElement Json(params string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.True(r.ExitCode == 0, r.Err);
        return JsonDocument.Parse(r.Out).RootElement.Clone();
    }

    [Fact]
    public void Rule_of_thumb_uses_the_models_own_size()
    {
        var tiny = Json("memory", "--model", demo.Path, "--json");
        long parameters = tiny.GetProperty("parameter_count").GetInt64();
        Assert.InRange(parameters, 1_000, 999_999); // the premise: a model counted in thousands
        string rule = tiny.GetProperty("rule_of_thumb").GetString()!;
        Assert.Contains($"{Math.Round(parameters / 1e3):0}K params x 2 B", rule);
        Assert.Contains($"exact: {parameters:N0} params", rule);
        Assert.DoesNotContain("0B params", rule);
        Assert.DoesNotContain("0.000B", rule);
        Assert.DoesNotContain("\"1B\"", rule);

        string eight = Json("memory", "--model", "llama-3.1-8b", "--json").GetProperty("rule_of_thumb").GetString()!;
        Assert.Contains("8B params x 2 B = 16.00 GB (14.90 GiB)", eight);
        Assert.Contains("(14.96 GiB, 16.06 GB)", eight);
        Assert.Contains("8.030B parameters", eight);
    }

    [Fact]
    public void Text_sizes_are_binary_and_json_sizes_exact_bytes()
    {
        var r = CliHarness.Run("memory", "--model", "llama-3.2-1b");
        Assert.Equal(0, r.ExitCode);
        string weights = Assert.Single(r.Out.Split('\n'), l => l.Contains("parameters x 2 B", StringComparison.Ordinal));
        Assert.Contains("2,471,628,800", weights);
        Assert.Contains("2.30 GiB", weights);
        Assert.Equal(2_471_628_800, Json("memory", "--model", "llama-3.2-1b", "--json").GetProperty("weight_bytes").GetInt64());
    }

    [Fact]
    public void Enums_are_names_and_missing_values_are_null()
    {
        var items = Json("memory", "--model", "llama-3.2-1b", "--json").GetProperty("activation_items").EnumerateArray().ToList();
        Assert.NotEmpty(items);
        Assert.All(items, i => Assert.Equal("activations", i.GetProperty("category").GetString()));

        var cpu = Json("info", "--json").GetProperty("accelerators").EnumerateArray().Single(a => a.GetProperty("kind").GetString() == "cpu");
        Assert.Equal(JsonValueKind.Null, cpu.GetProperty("compute_capability").ValueKind);
        Assert.Contains(" - ", CliHarness.Run("info").Out); // the table still shows a dash
    }
}

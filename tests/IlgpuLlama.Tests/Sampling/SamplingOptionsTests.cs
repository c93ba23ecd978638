using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Sampling;

namespace IlgpuLlama.Tests.Sampling;

public class SamplingOptionsTests
{
    [Fact]
    public void Defaults_AreValid_AndFollowLlamaGenerationConfig()
    {
        var options = new SamplingOptions();
        options.Validate();
        Assert.Equal(0.6f, options.Temperature);
        Assert.Equal(0.9f, options.TopP);
        Assert.Equal(50, options.TopK);
        Assert.Equal(0f, options.MinP);
        Assert.Equal(1f, options.RepetitionPenalty);
        Assert.False(options.IsGreedy);
        SamplingOptions.Greedy.Validate();
        Assert.True(SamplingOptions.Greedy.IsGreedy);
        Assert.True(new SamplingOptions { TopK = 1 }.IsGreedy);
    }

    public static TheoryData<SamplingOptions, string, string> InvalidOptions => new()
    {
        { new SamplingOptions { Temperature = -0.1f }, "--temperature", ">= 0" },
        { new SamplingOptions { Temperature = float.NaN }, "--temperature", "finite" },
        { new SamplingOptions { Temperature = float.PositiveInfinity }, "--temperature", "finite" },
        { new SamplingOptions { TopK = -1 }, "--top-k", ">= 0" },
        { new SamplingOptions { TopP = 0f }, "--top-p", "(0, 1]" },
        { new SamplingOptions { TopP = 1.5f }, "--top-p", "(0, 1]" },
        { new SamplingOptions { TopP = float.NaN }, "--top-p", "(0, 1]" },
        { new SamplingOptions { MinP = 1f }, "--min-p", "[0, 1)" },
        { new SamplingOptions { MinP = -0.5f }, "--min-p", "[0, 1)" },
        { new SamplingOptions { RepetitionPenalty = 0f }, "--repetition-penalty", "> 0" },
        { new SamplingOptions { RepetitionPenalty = float.NaN }, "--repetition-penalty", "> 0" },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public void Validate_NamesTheFlagAndItsRange(SamplingOptions options, string flag, string range)
    {
        var ex = Assert.Throws<EngineArgumentException>(options.Validate);
        // Engine messages name parameters through placeholders; the CLI shows its flags in their place.
        string message = CliNames.Message(ex);
        Assert.StartsWith(flag + " ", message);
        Assert.Contains(range, message);
        Assert.DoesNotContain('\n', message);
        Assert.Throws<EngineArgumentException>(() => new TokenSampler(options));
    }
}

using System.Text.RegularExpressions;

namespace IlgpuLlama.Tests.Cli;

/// <summary>--verbose says where a model's load time goes (issue 23 item 1): every phase, and how many kernel specialisations were compiled.</summary>
public sealed class LoadTimeTests
{
    [Fact]
    public void Verbose_prints_the_load_time_of_each_phase()
    {
        var r = CliHarness.Run("generate", "--model", Model.GoldenFixture.Directory, "--tokens", "1,17,300", "--max-new-tokens", "2", "--device", "cpu", "--max-seq-len", "16", "--verbose");
        Assert.True(r.ExitCode == 0, r.Err);
        var m = Regex.Match(r.Err, @"load time: device [\d.]+ s \(ILGPU context and accelerator\), files [\d.]+ s, plan [\d.]+ s, allocation [\d.]+ s, kernel compilation [\d.]+ s \((\d+) specialisations\), weights [\d.]+ s");
        Assert.True(m.Success, r.Err);
        Assert.InRange(int.Parse(m.Groups[1].Value), 5, 80);
        var quiet = CliHarness.Run("generate", "--model", Model.GoldenFixture.Directory, "--tokens", "1,17,300", "--max-new-tokens", "2", "--device", "cpu", "--max-seq-len", "16");
        Assert.DoesNotContain("load time:", quiet.Err);
    }
}

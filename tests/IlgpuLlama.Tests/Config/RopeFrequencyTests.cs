using IlgpuLlama.Model;

namespace IlgpuLlama.Tests.Config;

public class RopeFrequencyTests
{
    private static void Close(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= 1e-14 * Math.Abs(expected), $"expected {expected:R}, got {actual:R}");

    [Fact]
    public void Unscaled_frequencies_are_theta_to_the_minus_2i_over_d()
    {
        var c = LlamaConfig.Preset("llama-3.2-1b") with { RopeScaling = null };
        var inv = c.RopeInverseFrequencies();
        Assert.Equal(32, inv.Length);
        Close(1.0, inv[0]);
        Close(Math.Pow(500000.0, -2.0 / 64), inv[1]);
        Close(Math.Pow(500000.0, -62.0 / 64), inv[31]);
    }

    [Fact]
    public void Golden_config_covers_high_medium_and_low_frequency_bands()
    {
        // head_dim 16, theta 500000, factor 32, low 1, high 4, original 64:
        // low_freq_wavelen = 64, high_freq_wavelen = 16; base inv_freq_i = 500000^(-i/8).
        var c = LlamaConfig.FromFile(Path.Combine(Safetensors.Fixtures.TinyLlamaDir, "config.json"));
        var inv = c.RopeInverseFrequencies();
        Assert.Equal(8, inv.Length);

        // i = 0: wavelen 2π ≈ 6.28 < 16 → high frequency, unchanged.
        Close(1.0, inv[0]);

        // i = 1: base 500000^(-1/8) = 0.19392...; wavelen ≈ 32.40 lies in [16, 64] → smoothed:
        // smooth = (64 / 32.400455734691 - 1) / (4 - 1) = 0.3250936...,
        // inv = (1 - smooth) * base / 32 + smooth * base = 0.0671330375110499 (float64).
        double b1 = Math.Pow(500000.0, -1.0 / 8);
        double wavelen = 2 * Math.PI / b1;
        Assert.InRange(wavelen, 32.40045573469, 32.40045573470);
        double smooth = (64 / wavelen - 1) / 3;
        Assert.InRange(smooth, 0.3250936, 0.3250937);
        Close(0.0671330375110499, inv[1]);

        // i = 2..7: wavelen ≥ 167 > 64 → low frequency, divided by the factor 32.
        Close(0.001175188466589498, inv[2]);
        Close(Math.Pow(500000.0, -2.0 / 8) / 32, inv[2]);
        Close(3.2229329303788936e-07, inv[7]);
    }

    [Fact]
    public void Llama_3_2_frequencies_match_an_independent_float64_computation()
    {
        // Reference values from a separate float64 implementation of HF's _compute_llama3_parameters
        // for head_dim 64, theta 500000, factor 32, low 1, high 4, original 8192.
        var inv = LlamaConfig.Preset("llama-3.2-1b").RopeInverseFrequencies();
        Close(1.0, inv[0]);
        Close(0.001290547928209264, inv[15]);     // medium band (wavelen ≈ 2868)
        Close(0.00042955679655936815, inv[16]);   // medium band
        Close(9.70828780262767e-05, inv[17]);     // medium band
        Close(8.570255489881478e-06, inv[20]);    // low band: base / 32
        Close(9.418306725434909e-08, inv[31]);
    }
}

using System.Runtime.InteropServices;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Gguf;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>
/// llama.cpp's K-quant mixes (q4_k_m, q5_k_m): which matrix gets which format, quantising at load, and
/// the quantize command, whose blocks are ggml's (the K-quant quantisers are ggml's bit for bit:
/// <see cref="KQuantTests"/>) and whose checkpoint loads to the same logits as quantising at load.
/// </summary>
public sealed class KQuantMixTests(GgufTestModel model) : IClassFixture<GgufTestModel>
{
    static string[] MoreBitsLayers(LlamaConfig config, WeightLayout layout, string part) =>
        Enumerable.Range(0, config.NumHiddenLayers).Where(l => layout.For($"model.layers.{l}.{part}") == WeightFormat.Q6_K).Select(l => l.ToString()).ToArray();

    [Fact]
    public void Q4_K_M_gives_q6_k_to_the_output_and_to_attn_v_and_ffn_down_of_llama_cpps_layers()
    {
        // Llama 3.2 1B: 16 layers, tied. llama.cpp's use_more_bits: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2.
        var one = LlamaConfig.Preset("llama-3.2-1b");
        var layout = WeightMix.Q4_K_M.Layout(one);
        Assert.Equal(["0", "1", "4", "7", "10", "13", "14", "15"], MoreBitsLayers(one, layout, "self_attn.v_proj.weight"));
        Assert.Equal(["0", "1", "4", "7", "10", "13", "14", "15"], MoreBitsLayers(one, layout, "mlp.down_proj.weight"));
        Assert.Equal(WeightFormat.Q6_K, layout.For("model.embed_tokens.weight")); // tied: the output layer
        Assert.Equal(WeightFormat.Q4_K, layout.For("model.layers.4.self_attn.q_proj.weight"));
        Assert.Equal(WeightFormat.Q4_K, layout.For("model.layers.4.mlp.up_proj.weight"));
        Assert.Empty(MoreBitsLayers(one, layout, "self_attn.k_proj.weight"));
        Assert.Empty(MoreBitsLayers(one, layout, "mlp.gate_proj.weight"));

        // Llama 3.1 8B: 32 layers, untied: the embedding stays q4_k, the output is q6_k.
        var eight = LlamaConfig.Preset("llama-3.1-8b");
        var layout8 = WeightMix.Q4_K_M.Layout(eight);
        Assert.Equal(["0", "1", "2", "3", "6", "9", "12", "15", "18", "21", "24", "27", "28", "29", "30", "31"], MoreBitsLayers(eight, layout8, "self_attn.v_proj.weight"));
        Assert.Equal(WeightFormat.Q4_K, layout8.For("model.embed_tokens.weight"));
        Assert.Equal(WeightFormat.Q6_K, layout8.For(LlamaConfig.LmHeadName));
        Assert.Equal(WeightFormat.Q5_K, WeightMix.Q5_K_M.Layout(eight).For("model.layers.5.mlp.gate_proj.weight"));
        Assert.Equal(WeightFormat.Q6_K, WeightMix.Q5_K_M.Layout(eight).For("model.layers.6.mlp.down_proj.weight"));

        // Rows that are not whole super-blocks (the demo's 96 inputs) fall back to q8_0.
        Assert.Equal(WeightFormat.Q8_0, WeightMix.Q4_K_M.Layout(DemoModel.Config).For("model.layers.0.self_attn.q_proj.weight"));
    }

    [Fact]
    public void The_memory_formula_sums_the_mix_and_8b_q4_k_m_fits_a_p100()
    {
        var r = CliHarness.Run("memory", "--model", "llama-3.1-8b", "--dtype", "q4_k_m", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        var config = LlamaConfig.Preset("llama-3.1-8b");
        long expected = WeightMix.Q4_K_M.Layout(config).WeightBytes(config);
        Assert.Equal(expected, root.GetProperty("weight_bytes").GetInt64());
        Assert.Equal("q4_k+q6_k", root.GetProperty("dtype").GetString());
        Assert.Contains(root.GetProperty("fits").EnumerateArray(), f => f.GetProperty("device").GetString()!.Contains("P100") && f.GetProperty("fits").GetBoolean());
    }

    [Fact]
    public void Quantize_q4_k_m_writes_ggml_blocks_and_loads_to_the_logits_of_quantising_at_load()
    {
        string outDir = Path.Combine(model.Root, "q4_k_m-checkpoint");
        var r = CliHarness.Run("quantize", "--model", model.HfDir, "--dtype", "q4_k_m", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("q4_k_m", r.Out);
        var config = LlamaConfig.FromDirectory(outDir);
        Assert.Same(WeightMix.Q4_K_M, config.QuantizationMix);

        // Every block of a Q4_K and a Q6_K matrix is what ggml's quantiser makes of the source values.
        using (var source = SafetensorsModel.Open(model.HfDir))
        using (var written = SafetensorsModel.Open(outDir))
        {
            foreach (string name in new[] { "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight", LlamaConfig.LmHeadName })
            {
                var format = (BlockQuantFormat)config.StoredLayout!.For(name);
                var t = source.GetTensor(name);
                var values = new float[t.ElementCount];
                DTypeConversion.ToF32(source.GetSpan(t), t.DType, values);
                var quants = written.GetSpan(written.GetTensor(name)).ToArray();
                var side = MemoryMarshal.Cast<byte, ushort>(written.GetSpan(written.GetTensor(name + BlockQuantFormat.ScalesSuffix))).ToArray();
                var type = format == WeightFormat.Q6_K ? KQuantType.Q6_K : KQuantType.Q4_K;
                var ggml = new byte[format.BytesPerBlock];
                var ours = new byte[format.BytesPerBlock];
                for (int b = 0; b < values.Length / 256; b++)
                {
                    KQuants.QuantizeRow(type, values.AsSpan(b * 256, 256), ggml);
                    format.ToGgml(quants.AsSpan(b * format.QuantBytesPerBlock, format.QuantBytesPerBlock), side.AsSpan(b * format.SideWords, format.SideWords), ours);
                    Assert.True(ggml.AsSpan().SequenceEqual(ours), $"{name} block {b} differs from ggml's");
                }
            }
        }

        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        var options = new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 16 };
        using var stored = LlamaModel.Load(device, outDir, options);
        using var atLoad = LlamaModel.Load(device, model.HfDir, options with { WeightMix = WeightMix.Q4_K_M });
        Assert.Equal(atLoad.Layout, stored.Layout);
        Assert.Equal(atLoad.Plan.WeightBytes, stored.Plan.WeightBytes);
        var a = new float[config.VocabSize];
        var b2 = new float[config.VocabSize];
        for (int t = 0; t < model.Tokens.Length && t < 12; t++)
        {
            stored.Decode([new DecodeRow(0, t, model.Tokens[t])], SelectMode.ArgMax);
            atLoad.Decode([new DecodeRow(0, t, model.Tokens[t])], SelectMode.ArgMax);
            stored.ReadLogitsRow(0, a);
            atLoad.ReadLogitsRow(0, b2);
            Assert.Equal(b2, a);
        }
        // The checkpoint loads only as its mix.
        var e = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, outDir, options with { WeightFormat = WeightFormat.Q4_K }));
        Assert.Contains("stored as q4_k_m", e.Message);
    }
}

using System.Text.Json.Nodes;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>
/// <see cref="CheckpointQuantizer"/> and the quantize command: a quantised directory loads without
/// quantising again and gives exactly the logits of quantising at load; the output appears whole or
/// not at all; bad inputs are one clear error that leaves nothing behind.
/// </summary>
public sealed class CheckpointQuantizerTests(QuantizableModel model) : IClassFixture<QuantizableModel>
{
    static float[][] PrefillLogits(string dir, WeightFormat? format, int[] tokens)
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, dir, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 32, WeightFormat = format });
        var rows = new float[tokens.Length][];
        llama.PrefillLogits([new SequenceInput(0, 0, tokens)], (_, pos, row) => rows[pos] = row.ToArray());
        return rows;
    }

    static string[] Leftovers(string parent) => Directory.EnumerateFileSystemEntries(parent).Select(Path.GetFileName).ToArray()!;

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void A_quantized_directory_gives_the_logits_of_quantizing_at_load_bit_for_bit(string dtype)
    {
        var format = (BlockQuantFormat)WeightFormat.Parse(dtype);
        string parent = CliHarness.TempDir(), outDir = Path.Combine(parent, "q");
        try
        {
            // Small shards: several files and an index, a matrix never split.
            var result = CheckpointQuantizer.Quantize(model.Directory, format, outDir, maxShardBytes: 48 << 10);
            Assert.Equal(["q"], Leftovers(parent));
            Assert.Contains(SafetensorsModel.IndexFileName, result.Files);
            Assert.Contains("tokenizer.model", result.Files);
            Assert.True(File.ReadAllBytes(Path.Combine(model.Directory, "tokenizer.model")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "tokenizer.model"))));

            var config = LlamaConfig.FromDirectory(outDir);
            Assert.Equal(format, config.Quantization);
            Assert.Equal(config with { Quantization = null, TorchDtype = DemoModel.Config.TorchDtype }, LlamaConfig.FromDirectory(model.Directory));
            using (var stored = SafetensorsModel.Open(outDir))
            {
                Assert.True(stored.IsSharded);
                var up = stored.GetTensor("model.layers.1.mlp.up_proj.weight");
                Assert.Equal(format == WeightFormat.Q8_0 ? SafetensorsDType.I8 : SafetensorsDType.U8, up.DType);
                Assert.Equal([256L, format.RowQuantBytes(96)], up.Shape);
                var scales = stored.GetTensor("model.layers.1.mlp.up_proj.weight.scales");
                Assert.Equal(SafetensorsDType.F16, scales.DType);
                Assert.Equal([256L, 3L], scales.Shape);
                Assert.Equal(SafetensorsDType.F16, stored.GetTensor("model.norm.weight").DType);
                Assert.Equal(result.WeightBytes, stored.Tensors.Values.Sum(t => t.ByteLength));
                Assert.Equal(config.ExpectedTensors().Sum(t => t.Shape.Length == 2 ? format.MatrixBytes(t.Shape[0], t.Shape[1]) : t.Shape[0] * 2), result.WeightBytes);
            }

            var atLoad = PrefillLogits(model.Directory, format, model.Tokens);
            var fromDisk = PrefillLogits(outDir, null, model.Tokens);
            for (int t = 0; t < atLoad.Length; t++)
                Assert.True(atLoad[t].AsSpan().SequenceEqual(fromDisk[t]), $"{dtype}: logits at position {t} differ between quantizing at load and loading the quantized directory");
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public void An_existing_output_is_refused_and_left_untouched()
    {
        string parent = CliHarness.TempDir();
        try
        {
            string dir = Path.Combine(parent, "exists");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "keep.txt"), "mine");
            string file = Path.Combine(parent, "file");
            File.WriteAllText(file, "mine too");
            foreach (string target in new[] { dir, file })
            {
                var e = Assert.Throws<EngineArgumentException>(() => CheckpointQuantizer.Quantize(model.Directory, WeightFormat.Q8_0, target));
                Assert.Contains("already exists", e.Message);
                Assert.Equal(EngineParameter.OutputDirectory, e.Parameter);
            }
            Assert.Equal("mine", File.ReadAllText(Path.Combine(dir, "keep.txt")));
            Assert.Equal("mine too", File.ReadAllText(file));
            Assert.Equal(["exists", "file"], Leftovers(parent).Order());
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public void An_already_quantized_source_and_rows_that_are_not_whole_blocks_are_refused()
    {
        string parent = CliHarness.TempDir();
        try
        {
            string q = Path.Combine(parent, "q");
            CheckpointQuantizer.Quantize(model.Directory, WeightFormat.Q4_0, q);
            var again = Assert.Throws<EngineArgumentException>(() => CheckpointQuantizer.Quantize(q, WeightFormat.Q8_0, Path.Combine(parent, "qq")));
            Assert.Contains("already quantized (q4_0)", again.Message);

            var golden = Assert.Throws<EngineArgumentException>(() => CheckpointQuantizer.Quantize(GoldenFixture.Directory, WeightFormat.Q8_0, Path.Combine(parent, "g")));
            Assert.Contains("not a multiple of 32", golden.Message);
            Assert.Equal(["q"], Leftovers(parent));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public void Cancelling_leaves_nothing_behind()
    {
        string parent = CliHarness.TempDir();
        try
        {
            using var cancel = new CancellationTokenSource();
            cancel.Cancel();
            Assert.ThrowsAny<OperationCanceledException>(() => CheckpointQuantizer.Quantize(model.Directory, WeightFormat.Q8_0, Path.Combine(parent, "q"), cancellation: cancel.Token));
            Assert.Empty(Leftovers(parent));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    /// <summary>A copy of the test model with one value of <paramref name="tensor"/> replaced by bf16 NaN.</summary>
    static string CopyWithNaN(string source, string parent, string tensor)
    {
        string dir = Path.Combine(parent, "nan");
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.EnumerateFiles(source))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        long offset;
        using (var m = SafetensorsModel.Open(dir))
            offset = m.GetTensor(tensor).FileOffset + 2 * 37;
        using var s = new FileStream(Path.Combine(dir, SafetensorsModel.SingleFileName), FileMode.Open, FileAccess.Write);
        s.Position = offset;
        s.Write([0xC1, 0x7F]);
        return dir;
    }

    [Fact]
    public void A_NaN_in_the_source_names_the_tensor_and_leaves_nothing_behind()
    {
        string parent = CliHarness.TempDir();
        try
        {
            string nan = CopyWithNaN(model.Directory, parent, "model.layers.0.self_attn.k_proj.weight");
            var e = Assert.Throws<SafetensorsException>(() => CheckpointQuantizer.Quantize(nan, WeightFormat.Q8_0, Path.Combine(parent, "q")));
            Assert.Contains("'model.layers.0.self_attn.k_proj.weight' holds a NaN or infinite value (element 37)", e.Message);
            Assert.Equal(["nan"], Leftovers(parent));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public void A_quantized_directory_loads_only_in_its_format_and_its_corruptions_are_named()
    {
        string parent = CliHarness.TempDir();
        try
        {
            string q = Path.Combine(parent, "q");
            CheckpointQuantizer.Quantize(model.Directory, WeightFormat.Q8_0, q);
            using var device = ComputeDevice.Create(DeviceKind.Cpu);
            var mismatch = Assert.Throws<EngineArgumentException>(() => LlamaModel.Load(device, q, new EngineOptions { WeightFormat = WeightFormat.Fp16 }));
            Assert.Contains("stored as q8_0 and loads only as q8_0, not fp16", mismatch.Message);
            Assert.Equal(EngineParameter.WeightFormat, mismatch.Parameter);

            // config.json claiming the other block format: the stored shapes contradict it.
            string configPath = Path.Combine(q, "config.json");
            string original = File.ReadAllText(configPath);
            File.WriteAllText(configPath, original.Replace("\"q8_0\"", "\"q4_0\""));
            var shapes = Assert.Throws<ModelConfigException>(() => LlamaModel.Load(device, q, new EngineOptions()));
            Assert.Contains($"tensor 'model.embed_tokens.weight' has shape [{DemoModel.Config.VocabSize}, 96] but config.json implies [{DemoModel.Config.VocabSize}, 48]", shapes.Message);
            Assert.Contains(shapes.Problems, p => p.Contains("has dtype I8, but a q4_0 checkpoint stores it as U8"));
            var node = JsonNode.Parse(original)!;
            node["quantization"]!["format"] = "q3_k";
            File.WriteAllText(configPath, node.ToJsonString());
            var unknown = Assert.Throws<ModelConfigException>(() => LlamaModel.Load(device, q, new EngineOptions()));
            Assert.Contains("'quantization.format' 'q3_k' is not a block format this engine reads", unknown.Message);
            File.WriteAllText(configPath, original);

            // An infinite scale.
            long offset;
            using (var m = SafetensorsModel.Open(q))
                offset = m.GetTensor("model.layers.1.mlp.down_proj.weight.scales").FileOffset + 2 * 5;
            using (var s = new FileStream(Path.Combine(q, SafetensorsModel.SingleFileName), FileMode.Open, FileAccess.Write))
            {
                s.Position = offset;
                s.Write([0x00, 0x7C]);
            }
            var inf = Assert.Throws<SafetensorsException>(() => LlamaModel.Load(device, q, new EngineOptions()));
            Assert.Contains("'model.layers.1.mlp.down_proj.weight.scales' holds a NaN or infinite scale (block 5)", inf.Message);
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public void The_quantize_command_writes_a_model_that_memory_and_generate_read()
    {
        string parent = CliHarness.TempDir();
        try
        {
            string q = Path.Combine(parent, "q4");
            var r = CliHarness.Run("quantize", "--model", model.Directory, "--dtype", "q4_0", "--out", q);
            Assert.True(r.ExitCode == 0, r.Err);
            Assert.Contains("q4_0, 153,024 B of weights", r.Out);

            var memory = CliHarness.Run("memory", "--model", q, "--json");
            Assert.Equal(0, memory.ExitCode);
            var weightBytes = JsonNode.Parse(memory.Out)!["weight_bytes"]!.GetValue<long>();
            Assert.Equal(153_024, weightBytes);

            var again = CliHarness.Run("quantize", "--model", model.Directory, "--dtype", "q8_0", "--out", q);
            Assert.Equal(1, again.ExitCode);
            Assert.Equal($"error: --out '{q}' already exists; give a new directory (nothing was written)", again.Err.Trim());

            var fp16 = CliHarness.Run("quantize", "--model", model.Directory, "--dtype", "fp16", "--out", Path.Combine(parent, "x"));
            Assert.Equal(2, fp16.ExitCode);

            var wrongDtype = CliHarness.Run("logits", "--model", q, "--dtype", "bf16", "--tokens", "1,2", "--out", Path.Combine(parent, "l.npy"));
            Assert.Equal(1, wrongDtype.ExitCode);
            Assert.Contains("use --dtype q4_0", wrongDtype.Err);
            Assert.Equal(["q4"], Leftovers(parent));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }
}

using System.Runtime.InteropServices;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Gguf;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Tests.Model;
using IlgpuLlama.Tests.Text;
using IlgpuLlama.Text;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Gguf;

/// <summary>
/// A tiny Llama 3 model whose every matrix has whole 256-value rows (so the K-quants apply), written
/// once as a Hugging Face directory and as GGUF files the way llama.cpp's converter writes them: F16,
/// BF16, Q8_0 and a Q4_K_M-style mix (Q4_K, with Q6_K for attn_v, ffn_down and the output, and Q5_K).
/// </summary>
public sealed class GgufTestModel : IDisposable
{
    public static LlamaConfig Config { get; } = new()
    {
        HiddenSize = 256, IntermediateSize = 512, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 64,
        VocabSize = 512 + Llama3Vocabulary.SpecialTokenCount, RmsNormEps = 1e-5, RopeTheta = 500000.0,
        RopeScaling = new RopeScaling("llama3", 32.0, 1.0, 4.0, 64), TieWordEmbeddings = false,
        BosTokenId = 512, EosTokenIds = [513], MaxPositionEmbeddings = 2048, TorchDtype = "bfloat16",
    };

    public GgufTestModel()
    {
        Root = CliHarness.TempDir();
        HfDir = System.IO.Path.Combine(Root, "hf");
        Directory.CreateDirectory(HfDir);
        File.WriteAllText(System.IO.Path.Combine(HfDir, "config.json"), Config.ToJson());
        TiktokenModelWriter.Write(System.IO.Path.Combine(HfDir, "tokenizer.model"), TestTokenizers.TinyRanks);
        var noise = new DeterministicNoise(7);
        var tensors = new List<TensorToWrite>();
        foreach (var (name, shape) in Config.ExpectedTensors())
        {
            long n = shape.Aggregate(1L, (a, d) => a * d);
            bool norm = shape.Length == 1;
            double scale = norm ? 0.1 : name.Contains("embed", StringComparison.Ordinal) ? 0.6 : 1.5 / Math.Sqrt(shape[^1]);
            var bits = new ushort[n];
            for (long i = 0; i < n; i++)
            {
                double v = norm ? 1 + noise.NextSymmetric() * scale : noise.NextSymmetric() * scale;
                bits[i] = WeightFormat.Bf16.Encode(Math.Abs(v) < 6.2e-5 ? 0 : v);
            }
            tensors.Add(new TensorToWrite(name, SafetensorsDType.BF16, shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray()));
        }
        SafetensorsWriter.Write(System.IO.Path.Combine(HfDir, "model.safetensors"), tensors);

        foreach (var (file, typeOf) in new (string, Func<string, GgmlType>)[]
        {
            ("f16", _ => GgmlType.F16),
            ("bf16", _ => GgmlType.BF16),
            ("q8_0", _ => GgmlType.Q8_0),
            ("q4_k_m", MixType),
        })
            GgufWriter.FromHuggingFace(HfDir, typeOf).Save(Path(file));
    }

    /// <summary>Q4_K_M's choice on this model: Q6_K for attn_v, ffn_down of the first layer and the output, Q5_K for one attn_k, Q4_K elsewhere.</summary>
    public static GgmlType MixType(string name) =>
        name == LlamaConfig.LmHeadName || name.EndsWith("v_proj.weight") || name == "model.layers.0.mlp.down_proj.weight" ? GgmlType.Q6_K
        : name == "model.layers.1.self_attn.k_proj.weight" ? GgmlType.Q5_K
        : GgmlType.Q4_K;

    public string Root { get; }

    public string HfDir { get; }

    public string Path(string name) => System.IO.Path.Combine(Root, name + ".gguf");

    public int[] Tokens { get; } = [512, 84, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114, 111, 300, 17, 260, 401];

    public void Dispose() => Directory.Delete(Root, recursive: true);
}

/// <summary>
/// GGUF models end to end on the CPU accelerator: configuration from the metadata, llama.cpp's q/k
/// permutation undone, logits of F16, Q8_0 and a Q4_K_M-style mix within the golden tolerance of a
/// float64 forward pass over the weights the device holds (the file's values, dequantised as ggml
/// does, in the device format), at batch 1 and 4, prefill and decode; the tokenizer from the
/// metadata equals tokenizer.json's; split sets, directories and Ollama's store resolve.
/// </summary>
public sealed class GgufModelTests(GgufTestModel model, ITestOutputHelper output) : IClassFixture<GgufTestModel>
{
    /// <summary>
    /// The bound on |logit - reference|: the engine computes in fp32 with fp16 activations and KV
    /// cache, and the reference holds the device's weights exactly, so what is left is rounding
    /// (about 1e-3 on these logits of magnitude ~10); a wrong row order or a misread block is orders larger.
    /// </summary>
    public const double LogitBound = 0.01;

    static double MaxAbsDiff(ReadOnlySpan<float> a, double[] b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    /// <summary>Every engine tensor of a GGUF file as fp32 values in Hugging Face row order (the host's dequantisation).</summary>
    static Dictionary<string, float[]> Dequantized(string path, LlamaConfig config)
    {
        using var source = GgufModel.Open(path);
        var result = new Dictionary<string, float[]>();
        foreach (var (name, shape) in config.ExpectedTensors())
        {
            var t = GgufLlama.Tensor(source, name);
            int cols = (int)shape[^1];
            long rows = shape.Length == 2 ? shape[0] : 1;
            var values = new float[rows * cols];
            for (long r = 0; r < rows; r++)
                GgufRows.Dequantize(t.Type, source.GetSpan(t, GgufLlama.SourceRow(name, r, config.HeadDim) * t.RowBytes, (int)t.RowBytes), values.AsSpan((int)(r * cols), cols));
            result[name] = values;
        }
        return result;
    }

    [Fact]
    public void The_configuration_comes_from_the_llama_metadata()
    {
        using var source = GgufModel.Open(model.Path("f16"));
        var config = GgufLlama.ReadConfig(source);
        var expected = GgufTestModel.Config;
        // GGUF stores epsilon as fp32.
        Assert.Equal((float)expected.RmsNormEps, (float)config.RmsNormEps);
        Assert.Equal(expected with { RopeScaling = null, EosTokenIds = config.EosTokenIds, RopeFrequencyFactors = config.RopeFrequencyFactors, TorchDtype = config.TorchDtype, RmsNormEps = config.RmsNormEps }, config);
        Assert.Equal([513, 521], config.EosTokenIds);
        // rope_freqs.weight (fp32 factors) gives Llama 3.1's scaled frequencies.
        var a = config.RopeInverseFrequencies();
        var b = expected.RopeInverseFrequencies();
        for (int i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * b[i], $"pair {i}: {a[i]} vs {b[i]}");
        Assert.Equal(WeightFormat.Fp16, GgufLlama.DefaultLayout(source, config).Main);
        Assert.False(GgufLlama.DefaultLayout(source, config).IsMixed);
        Assert.Equal("F16 x 16", GgufLlama.TypeMix(source, config));
    }

    [Fact]
    public void Undoing_the_converters_permutation_gives_back_every_row()
    {
        const int heads = 3, headDim = 8, cols = 2;
        var w = Enumerable.Range(0, heads * headDim * cols).Select(i => (float)i).ToArray();
        var permuted = GgufWriter.Permute(w, heads * headDim, cols, headDim);
        Assert.NotEqual(w, permuted);
        for (int r = 0; r < heads * headDim; r++)
            Assert.Equal(w.AsSpan(r * cols, cols).ToArray(), permuted.AsSpan((int)GgufLlama.SourceRow(r, headDim) * cols, cols).ToArray());
        Assert.Equal(5, GgufLlama.SourceRow("model.layers.0.mlp.up_proj.weight", 5, headDim));
        Assert.True(GgufLlama.IsPermuted("model.layers.3.self_attn.k_proj.weight"));
        Assert.False(GgufLlama.IsPermuted("model.layers.3.self_attn.v_proj.weight"));
    }

    [Fact]
    public void A_bf16_gguf_gives_the_logits_of_the_same_weights_from_safetensors()
    {
        // The same BF16 values through both loaders: any mistake in names, shapes or the q/k row order shows here.
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        var options = new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 32, WeightFormat = WeightFormat.Bf16 };
        using var fromHf = LlamaModel.Load(device, model.HfDir, options);
        using var fromGguf = LlamaModel.Load(device, model.Path("bf16"), options);
        Assert.Equal(WeightFormat.Bf16, fromGguf.Format);
        var a = new float[fromHf.Config.VocabSize];
        var b = new float[fromHf.Config.VocabSize];
        double worst = 0;
        for (int t = 0; t < model.Tokens.Length; t++)
        {
            fromHf.Decode([new DecodeRow(0, t, model.Tokens[t])], SelectMode.ArgMax);
            fromGguf.Decode([new DecodeRow(0, t, model.Tokens[t])], SelectMode.ArgMax);
            fromHf.ReadLogitsRow(0, a);
            fromGguf.ReadLogitsRow(0, b);
            for (int i = 0; i < a.Length; i++)
                worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        output.WriteLine($"bf16 GGUF vs safetensors: max |logit difference| {worst:G3} (only the RoPE frequencies differ: fp32 factors vs float64 parameters)");
        Assert.True(worst < 1e-3, $"the GGUF model's logits differ from the safetensors model's by {worst}");
    }

    [Theory]
    [InlineData("f16", null, "fp16")]
    [InlineData("q8_0", null, "q8_0")]
    [InlineData("q4_k_m", null, "q4_k+q5_k+q6_k")]
    [InlineData("q4_k_m", "fp16", "fp16")]
    public void Logits_equal_a_float64_forward_pass_on_the_dequantised_weights(string file, string? dtype, string layoutName)
    {
        string path = model.Path(file);
        var config = ModelLocation.Config(path);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, path, new EngineOptions { MaxBatchSize = 4, MaxSeqLen = 32, WeightFormat = dtype is null ? null : WeightFormat.Parse(dtype) });
        Assert.Equal(layoutName, llama.Layout.Name);
        // The reference holds what the device holds: the file's values, stored again in the device format where it is not the file's own.
        WeightFormat? StoredAgain(string name)
        {
            using var source = GgufModel.Open(path);
            var own = GgufLlama.Tensor(source, name).Type;
            var f = llama.Layout.For(name);
            return GgufRows.BlockType(f) == own ? null : f;
        }
        var reference = new ReferenceForward(config, Dequantized(path, config), StoredAgain);

        // Four sequences: the prompt and three rotations of it, prefilled together, then decoded together.
        var seqs = Enumerable.Range(0, 4).Select(s => model.Tokens.Skip(s * 3).Concat(model.Tokens.Take(s * 3)).ToArray()).ToArray();
        var expected = seqs.Select(s => reference.Logits(s)).ToArray();
        int prefix = 10;
        var prefill = new float[4][][];
        for (int s = 0; s < 4; s++)
            prefill[s] = new float[prefix][];
        llama.PrefillLogits(Enumerable.Range(0, 4).Select(s => new SequenceInput(s, 0, seqs[s][..prefix])).ToList(), (slot, pos, row) => prefill[slot][pos] = row.ToArray());
        double worstPrefill = 0, worstDecode = 0, worstBatch1 = 0;
        for (int s = 0; s < 4; s++)
            for (int t = 0; t < prefix; t++)
                worstPrefill = Math.Max(worstPrefill, MaxAbsDiff(prefill[s][t], expected[s][t]));
        var row = new float[config.VocabSize];
        for (int t = prefix; t < seqs[0].Length; t++)
        {
            llama.Decode(Enumerable.Range(0, 4).Select(s => new DecodeRow(s, t, seqs[s][t])).ToList(), SelectMode.ArgMax);
            for (int s = 0; s < 4; s++)
            {
                llama.ReadLogitsRow(s, row);
                worstDecode = Math.Max(worstDecode, MaxAbsDiff(row, expected[s][t]));
            }
        }
        // Batch 1: slot 0 again from the start, decoded alone.
        for (int t = 0; t < seqs[0].Length; t++)
        {
            llama.Decode([new DecodeRow(0, t, seqs[0][t])], SelectMode.ArgMax);
            llama.ReadLogitsRow(0, row);
            worstBatch1 = Math.Max(worstBatch1, MaxAbsDiff(row, expected[0][t]));
        }
        output.WriteLine($"{file} as {llama.Layout.Name}: max |error| prefill (batch 4) {worstPrefill:G3}, decode batch 4 {worstDecode:G3}, decode batch 1 {worstBatch1:G3} (bound {LogitBound})");
        Assert.True(worstPrefill <= LogitBound, $"{file} prefill logits off by {worstPrefill}");
        Assert.True(worstDecode <= LogitBound, $"{file} batch-4 decode logits off by {worstDecode}");
        Assert.True(worstBatch1 <= LogitBound, $"{file} batch-1 decode logits off by {worstBatch1}");
    }

    /// <summary>Decode logits of every position of <paramref name="tokens"/> (row t predicts token t + 1).</summary>
    static float[][] DecodeLogits(string path, string? dtype, int[] tokens)
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var llama = LlamaModel.Load(device, path, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = tokens.Length, WeightFormat = dtype is null ? null : WeightFormat.Parse(dtype) });
        var result = new float[tokens.Length][];
        for (int t = 0; t < tokens.Length; t++)
        {
            llama.Decode([new DecodeRow(0, t, tokens[t])], SelectMode.ArgMax);
            result[t] = new float[llama.Config.VocabSize];
            llama.ReadLogitsRow(0, result[t]);
        }
        return result;
    }

    [Fact]
    public void Quality_of_q8_0_and_q4_k_m_against_f16()
    {
        // The figures of docs/quantization.md ("GGUF files"): a text of the tokenizer's corpus through each file.
        var tokenizer = GgufTokenizers.FromGguf(model.Path("f16"));
        var tokens = tokenizer.Encode(TestTokenizers.Corpus[..400], addBos: true).ToArray();
        var reference = DecodeLogits(model.Path("f16"), null, tokens);
        double Perplexity(float[][] logits) => Math.Exp(-Enumerable.Range(0, tokens.Length - 1).Average(t => Float64Oracle.LogSoftmax(logits[t])[tokens[t + 1]]));
        output.WriteLine($"{tokens.Length} positions; f16 (fp16 on the device): perplexity {Perplexity(reference):G4}");
        foreach (var (file, dtype) in new[] { ("q8_0", (string?)null), ("q4_k_m", null), ("q4_k_m", "fp16") })
        {
            var ours = DecodeLogits(model.Path(file), dtype, tokens);
            double maxError = 0, spread = 0, kl = 0;
            int agree = 0;
            for (int t = 0; t < tokens.Length; t++)
            {
                var p = Float64Oracle.LogSoftmax(reference[t]);
                var q = Float64Oracle.LogSoftmax(ours[t]);
                kl += p.Select((lp, i) => Math.Exp(lp) * (lp - q[i])).Sum() / tokens.Length;
                maxError = Math.Max(maxError, reference[t].Zip(ours[t], (a, b) => Math.Abs(a - b)).Max());
                spread = Math.Max(spread, reference[t].Max() - reference[t].Min());
                agree += Array.IndexOf(reference[t], reference[t].Max()) == Array.IndexOf(ours[t], ours[t].Max()) ? 1 : 0;
            }
            output.WriteLine($"{file}{(dtype is null ? "" : " as " + dtype)}: max error {maxError:G3} (spread {spread:G3}), top-1 {agree}/{tokens.Length}, mean KL(f16 || it) {kl:G3} nats, perplexity {Perplexity(ours):G4}");
            Assert.True(kl < 0.05, $"{file}: mean KL {kl}");
            Assert.True(agree >= tokens.Length * 8 / 10, $"{file}: top-1 agreement {agree}/{tokens.Length}");
        }
    }

    [Fact]
    public void A_q8_0_file_loads_its_blocks_as_they_are()
    {
        // Q8_0 blocks go to the device unchanged: the host's dequantisation of the file equals the device format's values exactly.
        var config = ModelLocation.Config(model.Path("q8_0"));
        var values = Dequantized(model.Path("q8_0"), config);
        string name = "model.layers.1.self_attn.q_proj.weight";
        var requantized = HostMatrixOf(WeightFormat.Q8_0, values[name], config.QDim, config.HiddenSize);
        Assert.Equal(values[name].Select(v => (double)v), requantized);
    }

    static double[] HostMatrixOf(WeightFormat f, float[] v, int rows, int cols) =>
        IlgpuLlama.Kernels.Reference.HostMatrix.From(f, v, rows, cols).Dequantized();

    public static TheoryData<string> HardStrings => Llama3ReferenceTokenizerTests.HardStrings;

    [Theory]
    [MemberData(nameof(HardStrings))]
    public void The_tokenizer_from_the_metadata_equals_the_one_from_tokenizer_json(string text)
    {
        var fromGguf = GgufTokenizers.FromGguf(model.Path("q8_0"));
        var fromJson = GgufTokenizers.FromJson(model.Root);
        Assert.Equal(fromJson.VocabSize, fromGguf.VocabSize);
        Assert.Equal(fromJson.Encode(text, addBos: true, parseSpecial: true), fromGguf.Encode(text, addBos: true, parseSpecial: true));
        Assert.Equal(fromJson.StopIds, fromGguf.StopIds);
        var fromRankFile = LlamaTokenizer.FromDirectory(model.HfDir, GgufTestModel.Config.VocabSize);
        Assert.Equal(fromRankFile.Encode(text, addBos: true, parseSpecial: true), fromGguf.Encode(text, addBos: true, parseSpecial: true));
    }

    [Fact]
    public void A_split_set_opens_from_its_first_part()
    {
        var whole = GgufWriter.FromHuggingFace(model.HfDir, _ => GgmlType.F16);
        string dir = System.IO.Path.Combine(model.Root, "split");
        Directory.CreateDirectory(dir);
        var parts = new[] { new GgufWriter(), new GgufWriter() };
        foreach (var m in whole.Metadata)
            parts[0].Add(m.Key, m.Value);
        for (int i = 0; i < 2; i++)
        {
            parts[i].Add(GgufModel.SplitNoKey, (ushort)i).Add(GgufModel.SplitCountKey, (ushort)2).Add("split.tensors.count", (int)whole.Tensors.Count);
            foreach (var t in whole.Tensors.Where((_, k) => k % 2 == i))
                parts[i].Tensors.Add(t);
            parts[i].Save(System.IO.Path.Combine(dir, $"tiny-{i + 1:D5}-of-00002.gguf"));
        }
        using (var split = GgufModel.Open(System.IO.Path.Combine(dir, "tiny-00001-of-00002.gguf")))
        using (var single = GgufModel.Open(model.Path("f16")))
        {
            Assert.Equal(2, split.Files.Count);
            Assert.Equal(single.Tensors.Keys.Order(), split.Tensors.Keys.Order());
            Assert.Equal(GgufLlama.ReadConfig(single), GgufLlama.ReadConfig(split));
            foreach (var t in single.Tensors.Values)
                Assert.True(single.GetSpan(t, 0, (int)t.ByteLength).SequenceEqual(split.GetSpan(split.Tensors[t.Name], 0, (int)t.ByteLength)), t.Name);
        }
        // The directory holds one model (its first part), so --model DIR finds it; the second part alone is refused naming the first.
        Assert.Equal(System.IO.Path.Combine(dir, "tiny-00001-of-00002.gguf"), GgufLocation.Find(dir));
        var e = Assert.Throws<GgufException>(() => GgufModel.Open(System.IO.Path.Combine(dir, "tiny-00002-of-00002.gguf")));
        Assert.Contains("tiny-00001-of-00002.gguf", e.Message);
        File.Delete(System.IO.Path.Combine(dir, "tiny-00002-of-00002.gguf"));
        e = Assert.Throws<GgufException>(() => GgufModel.Open(System.IO.Path.Combine(dir, "tiny-00001-of-00002.gguf")));
        Assert.Contains("part 2 of 2", e.Message);
    }

    [Fact]
    public void A_directory_with_two_models_asks_which()
    {
        var e = Assert.Throws<GgufException>(() => GgufLocation.Find(model.Root));
        Assert.Contains("GGUF models", e.Message);
        Assert.Null(GgufLocation.Find(model.HfDir));
    }

    [Fact]
    public void Ollama_names_resolve_through_the_manifest_to_the_blob()
    {
        string store = System.IO.Path.Combine(model.Root, "ollama");
        string digest = "sha256:" + new string('a', 64);
        string manifestDir = System.IO.Path.Combine(store, "manifests", "registry.ollama.ai", "library", "tiny");
        Directory.CreateDirectory(manifestDir);
        Directory.CreateDirectory(System.IO.Path.Combine(store, "blobs"));
        File.WriteAllText(System.IO.Path.Combine(manifestDir, "q8"), $$"""
            {"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
             "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{{new string('b', 64)}}","size":10},
             "layers":[{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{{new string('c', 64)}}","size":5},
                       {"mediaType":"application/vnd.ollama.image.model","digest":"{{digest}}","size":100}]}
            """);
        string blob = System.IO.Path.Combine(store, "blobs", "sha256-" + new string('a', 64));
        File.Copy(model.Path("q8_0"), blob);
        Assert.Equal(System.IO.Path.Combine(store, "manifests", "registry.ollama.ai", "library", "tiny", "latest"), OllamaStore.ManifestPath(store, "tiny"));
        Assert.Equal(System.IO.Path.Combine(store, "manifests", "example.com", "me", "tiny", "1b"), OllamaStore.ManifestPath(store, "example.com/me/tiny:1b"));
        string? previous = Environment.GetEnvironmentVariable(OllamaStore.StoreVariable);
        Environment.SetEnvironmentVariable(OllamaStore.StoreVariable, store);
        try
        {
            Assert.Equal(blob, GgufLocation.Find("ollama:tiny:q8"));
            var e = Assert.Throws<GgufException>(() => GgufLocation.Find("ollama:tiny:latest"));
            Assert.Contains("ollama pull tiny:latest", e.Message);
            e = Assert.Throws<GgufException>(() => GgufLocation.Find("ollama:../../etc"));
            Assert.Contains("not an Ollama model name", e.Message);
            var r = CliHarness.Run("tokenize", "--model", "ollama:tiny:q8", "--text", "Hello");
            Assert.True(r.ExitCode == 0, r.Err);
        }
        finally
        {
            Environment.SetEnvironmentVariable(OllamaStore.StoreVariable, previous);
        }
    }

    [Fact]
    public void Generate_runs_a_gguf_file_from_the_command_line()
    {
        var r = CliHarness.Run("generate", "--model", model.Path("q4_k_m"), "--prompt", "The quick", "--max-new-tokens", "4", "--device", "cpu", "--max-seq-len", "32");
        Assert.True(r.ExitCode == 0, r.Err);
        // The mix loads as it is: K-quant blocks go to the device unchanged.
        Assert.Contains("q4_k x 10, q6_k x 4, q5_k x 2", r.Err);
        Assert.Contains("blk.1.attn_q.weight Q4_K as q5_k", r.Err);
    }

    [Fact]
    public void Memory_shows_the_mix_and_the_allocator_equals_its_formula()
    {
        var config = ModelLocation.Config(model.Path("q4_k_m"));
        // Each matrix at its format's bytes per block (Q4_K 144, Q5_K 176, Q6_K 210 per 256 weights), the norms at 2 B.
        long expected = config.ExpectedTensors().Sum(t => t.Shape.Length == 1 ? 2 * t.Shape[0]
            : t.Shape[0] * t.Shape[1] / 256 * GgufTestModel.MixType(t.Name) switch { GgmlType.Q6_K => 210, GgmlType.Q5_K => 176, _ => 144 });
        // Layer 1's q (Q4_K) shares k's Q5_K in the fused q/k/v kernel.
        expected += config.HiddenSize * (long)config.HiddenSize / 256 * (176 - 144);
        var r = CliHarness.Run("memory", "--model", model.Path("q4_k_m"), "--batch", "2", "--seq", "32", "--allocate", "--device", "cpu", "--json");
        Assert.True(r.ExitCode == 0, r.Err);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Out);
        var root = doc.RootElement;
        Assert.Equal("q4_k+q5_k+q6_k", root.GetProperty("dtype").GetString());
        Assert.Contains("q4_k x 10, q6_k x 4, q5_k x 2", root.GetProperty("weight_formula").GetString());
        Assert.Equal(expected, root.GetProperty("weight_bytes").GetInt64());
        Assert.Equal(expected, root.GetProperty("allocated").GetProperty("weights").GetInt64());
        Assert.Equal(0, root.GetProperty("allocated").GetProperty("difference_from_formula").GetInt64());
    }

    [Fact]
    public void The_persistent_variant_refuses_a_mix_with_one_line()
    {
        var r = CliHarness.Run("generate", "--model", model.Path("q4_k_m"), "--prompt", "Hi", "--max-new-tokens", "1", "--device", "cpu", "--max-seq-len", "16", "--decode-variant", "persistent");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("fused-norm", r.Err);
        Assert.Contains("--dtype", r.Err);
    }

    [Fact]
    public void A_model_of_another_architecture_is_refused_naming_it()
    {
        var w = GgufWriter.FromHuggingFace(model.HfDir, _ => GgmlType.F16).Set("general.architecture", "qwen2");
        string path = System.IO.Path.Combine(model.Root, "qwen.gguf.tmp");
        w.Save(path);
        using var source = GgufModel.Open(path);
        var e = Assert.Throws<GgufException>(() => GgufLlama.ReadConfig(source));
        Assert.Contains("'qwen2'", e.Message);
    }
}

/// <summary>The same vocabulary as a GGUF tokenizer and as a Hugging Face tokenizer.json.</summary>
internal static class GgufTokenizers
{
    public static LlamaTokenizer FromGguf(string path)
    {
        using var file = GgufFile.Open(path);
        return LlamaTokenizer.FromGguf(file, GgufTestModel.Config.VocabSize);
    }

    public static LlamaTokenizer FromJson(string root)
    {
        string dir = System.IO.Path.Combine(root, "tokenizer-json");
        if (!File.Exists(System.IO.Path.Combine(dir, "tokenizer.json")))
        {
            Directory.CreateDirectory(dir);
            using var file = GgufFile.Open(System.IO.Path.Combine(root, "q8_0.gguf"));
            var tokens = file.GetArray<string>("tokenizer.ggml.tokens", GgufValueType.String)!;
            var types = file.GetIntegerArray("tokenizer.ggml.token_type")!;
            var vocab = new System.Text.Json.Nodes.JsonObject();
            var added = new System.Text.Json.Nodes.JsonArray();
            for (int i = 0; i < tokens.Length; i++)
            {
                if (types[i] == 1)
                    vocab[tokens[i]] = i;
                else
                    added.Add(new System.Text.Json.Nodes.JsonObject { ["id"] = i, ["content"] = tokens[i], ["special"] = true });
            }
            var json = new System.Text.Json.Nodes.JsonObject
            {
                ["added_tokens"] = added,
                ["model"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new System.Text.Json.Nodes.JsonArray() },
            };
            File.WriteAllText(System.IO.Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        }
        return LlamaTokenizer.FromDirectory(dir, GgufTestModel.Config.VocabSize);
    }
}

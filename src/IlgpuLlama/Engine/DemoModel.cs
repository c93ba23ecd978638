using System.Runtime.InteropServices;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Text;

namespace IlgpuLlama.Engine;

/// <summary>
/// The built-in demo: a tiny Llama-3-architecture model with deterministic random weights and a
/// small byte-level BPE tokenizer, written as a real Hugging Face style model directory
/// (config.json, model.safetensors, tokenizer.model) so that it goes through exactly the same
/// loader, tokenizer and kernels as a real download. Its text is gibberish: the weights are random.
/// </summary>
public static class DemoModel
{
    /// <summary>Directory name under weights/.</summary>
    public const string DirectoryName = "demo-tiny-llama3";

    /// <summary>Byte-level BPE merges learned for the demo tokenizer (ranks = 256 bytes + merges).</summary>
    public const int Merges = 256;

    /// <summary>Seed of the weights.</summary>
    public const ulong Seed = 20261127;

    /// <summary>The demo's configuration: Llama 3 architecture (GQA, llama3 RoPE scaling, tied embeddings) at toy size.</summary>
    public static LlamaConfig Config { get; } = new()
    {
        HiddenSize = 96, IntermediateSize = 256, NumHiddenLayers = 2, NumAttentionHeads = 6, NumKeyValueHeads = 2, HeadDim = 16,
        VocabSize = 256 + Merges + Llama3Vocabulary.SpecialTokenCount, RmsNormEps = 1e-5, RopeTheta = 500000.0,
        RopeScaling = new RopeScaling("llama3", 32.0, 1.0, 4.0, 64), TieWordEmbeddings = true,
        BosTokenId = 256 + Merges, EosTokenIds = [256 + Merges + 1, 256 + Merges + 8, 256 + Merges + 9],
        MaxPositionEmbeddings = 2048, TorchDtype = "bfloat16",
    };

    const string Corpus = """
        IlgpuLlama runs Llama 3 language models in C#. Every kernel is written by hand with ILGPU: the
        embedding lookup, the root mean square norm, rotary position embeddings, grouped query attention
        over a half precision key value cache, the matrix vector products of decoding and the tiled matrix
        products of prompt processing, and the sampling helpers. The model reads its weights from
        safetensors files and its tokenizer from the files that come with the download. The same code runs
        on an NVIDIA graphics card and on the processor. This tiny model has random weights, so the words it
        writes mean nothing, but every step of the real pipeline runs: the prompt is split into tokens, the
        tokens flow through the layers, the cache fills up, and new tokens are chosen one at a time until a
        stop token or the token limit ends the sequence. The quick brown fox jumps over the lazy dog. Once
        upon a time there was a model that wanted to tell a story, and the story was about a fox, a dog and
        a graphics card that computed the next word faster than anyone could read it. Hello world, hello
        model, hello tokens. The numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 are tokens too.
        """;

    /// <summary>
    /// Returns the demo model directory under <paramref name="weightsDir"/>, creating it if it is
    /// missing or incomplete. It is built in a temporary directory and renamed into place, so an
    /// interrupted run never leaves a half-written model behind.
    /// </summary>
    public static string Ensure(string weightsDir)
    {
        string dir = Path.Combine(weightsDir, DirectoryName);
        if (IsComplete(dir))
            return dir;
        try
        {
            return Build(weightsDir, dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new EngineStateException(
                $"cannot build the demo model in {Path.GetFullPath(weightsDir)} ({e.Message.TrimEnd('.')}); run from a writable directory or give {EngineParameters.Model} DIR", EngineParameter.Model, e);
        }
    }

    static string Build(string weightsDir, string dir)
    {
        Directory.CreateDirectory(weightsDir);
        RemoveStaleBuilds(weightsDir);
        string tmp = Path.Combine(weightsDir, $".{DirectoryName}.tmp-{Environment.ProcessId}");
        // Ctrl-C or SIGTERM during the build removes the half-written directory (the finally below does not run then).
        using var registration = IO.TemporaryPaths.Register(tmp);
        try
        {
            // Refused once a signal has arrived, so the handler's deletion cannot be followed by a new directory.
            IO.TemporaryPaths.CreateDirectory(tmp);
            Write(tmp);
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
            Directory.Move(tmp, dir);
        }
        finally
        {
            IO.TemporaryPaths.Delete(tmp);
        }
        return dir;
    }

    static bool IsComplete(string dir)
    {
        try
        {
            if (!File.Exists(Path.Combine(dir, "tokenizer.model")) || !File.Exists(Path.Combine(dir, "model.safetensors")) ||
                LlamaConfig.FromDirectory(dir) != Config)
                return false;
            // A truncated or edited weights file is rebuilt here, so it never reaches the loader (whose
            // advice for a real checkpoint, to download it again, would be wrong for a generated one).
            using var weights = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            return Config.ExpectedTensors().All(e => weights.Tensors.TryGetValue(e.Name, out var t) && t.Shape.SequenceEqual(e.Shape) && t.DType == SafetensorsDType.BF16);
        }
        catch (Exception e) when (e is ModelConfigException or SafetensorsException or IOException)
        {
            return false;
        }
    }

    /// <summary>Removes build directories left by a process that was killed outright (SIGKILL, power loss) and no longer runs.</summary>
    static void RemoveStaleBuilds(string weightsDir) =>
        IO.TemporaryPaths.RemoveStale(weightsDir, new System.Text.RegularExpressions.Regex($@"^\.{System.Text.RegularExpressions.Regex.Escape(DirectoryName)}\.tmp-(?<pid>\d+)$"));

    /// <summary>fp16's smallest normal value, 2^-14.</summary>
    const double MinNormalFp16 = 6.103515625e-05;

    /// <summary>Writes config.json, model.safetensors and tokenizer.model into <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), Config.ToJson());
        var ranks = TiktokenModelWriter.TrainByteLevel(Corpus, Merges);
        TiktokenModelWriter.Write(Path.Combine(dir, "tokenizer.model"), ranks);

        var noise = new DeterministicNoise(Seed);
        var tensors = new List<TensorToWrite>();
        foreach (var (name, shape) in Config.ExpectedTensors())
        {
            long n = shape.Aggregate(1L, (a, d) => a * d);
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            // Embedding rows large enough that the tied output layer gives a visibly peaked distribution.
            double scale = norm ? 0.1 : name.Contains("embed", StringComparison.Ordinal) ? 0.6 : 1.0 / Math.Sqrt(shape[^1]) * 1.5;
            var bits = new ushort[n];
            for (long i = 0; i < n; i++)
            {
                double u = noise.NextSymmetric();
                double v = norm ? 1 + u * scale : u * scale;
                // Values below fp16's smallest normal (2^-14) would load as fp16 subnormals with fewer
                // significant bits, and every command would warn about it: they become zero, which both
                // 16-bit formats hold exactly.
                if (Math.Abs(v) < MinNormalFp16)
                    v = 0;
                bits[i] = WeightFormat.Bf16.Encode(v);
            }
            tensors.Add(new TensorToWrite(name, SafetensorsDType.BF16, shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray()));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt", ["source"] = "IlgpuLlama built-in demo" });
    }
}

namespace IlgpuLlama.Kernels.Bench;

/// <summary>A set of model shapes the kernel benchmark runs at.</summary>
/// <param name="Name">--shapes value</param>
/// <param name="Hidden">hidden size</param>
/// <param name="Intermediate">MLP intermediate size</param>
/// <param name="Vocab">vocabulary size (LM head rows, logits length)</param>
/// <param name="Heads">query heads</param>
/// <param name="KvHeads">key/value heads</param>
/// <param name="HeadDim">head dimension</param>
/// <param name="DecodeSeqs">context lengths of the decode attention cases</param>
/// <param name="PrefillTokens">prompt length of the prefill cases (attention, rope, kv append, swiglu, rmsnorm)</param>
/// <param name="GemmTokens">M of the prefill GEMM cases</param>
/// <param name="TopK">k of the top-k case (clamped to what the kernel supports)</param>
public sealed record BenchShapes(string Name, int Hidden, int Intermediate, int Vocab, int Heads, int KvHeads, int HeadDim,
    int[] DecodeSeqs, int PrefillTokens, int[] GemmTokens, int TopK)
{
    /// <summary>Llama 3.2 1B.</summary>
    /// <remarks>Decode attention at 64 (short chat), 1024, 8192 and 32768 keys: where the split-K design must stream K and V at bandwidth.</remarks>
    public static BenchShapes Llama32_1B { get; } = new("llama-3.2-1b", 2048, 8192, 128256, 32, 8, 64, [64, 1024, 8192, 32768], 256, [128, 512], 50);

    /// <summary>Small odd shapes that run in seconds on the CPU accelerator.</summary>
    public static BenchShapes Tiny { get; } = new("tiny", 96, 344, 517, 6, 2, 16, [40], 40, [13, 40], 20);

    /// <summary>Names accepted by --shapes.</summary>
    public static readonly string[] Names = ["llama-3.2-1b", "tiny"];

    /// <summary>The set for a --shapes value.</summary>
    public static BenchShapes Parse(string name) => name.ToLowerInvariant() switch
    {
        "llama-3.2-1b" => Llama32_1B,
        "tiny" => Tiny,
        _ => throw new ArgumentException($"--shapes '{name}' is not one of {string.Join(", ", Names)}"),
    };

    /// <summary>
    /// These shapes with the input lengths of the matrices (hidden, intermediate) rounded up to whole
    /// blocks of <paramref name="block"/>, as a block format needs (the real models' already are; the
    /// tiny set's odd intermediate size is not).
    /// </summary>
    public BenchShapes WithWholeBlocks(int block) => this with
    {
        Hidden = (Hidden + block - 1) / block * block,
        Intermediate = (Intermediate + block - 1) / block * block,
    };

    /// <summary>q projection rows.</summary>
    public int QDim => Heads * HeadDim;

    /// <summary>k/v projection rows.</summary>
    public int KvDim => KvHeads * HeadDim;
}

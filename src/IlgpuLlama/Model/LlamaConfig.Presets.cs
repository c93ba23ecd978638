namespace IlgpuLlama.Model;

public sealed partial record LlamaConfig
{
    private static readonly RopeScaling Llama32Rope = new("llama3", Factor: 32.0, LowFreqFactor: 1.0, HighFreqFactor: 4.0, OriginalMaxPositionEmbeddings: 8192);
    private static readonly RopeScaling Llama31Rope = new("llama3", Factor: 8.0, LowFreqFactor: 1.0, HighFreqFactor: 4.0, OriginalMaxPositionEmbeddings: 8192);

    // Values are those of the meta-llama Instruct repositories on Hugging Face (config.json plus
    // generation_config.json's eos list), so a preset equals FromDirectory() of the real download.
    private static readonly (string Name, LlamaConfig Config)[] Presets =
    [
        ("llama-3.2-1b", new LlamaConfig
        {
            HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16, NumAttentionHeads = 32, NumKeyValueHeads = 8,
            HeadDim = 64, VocabSize = 128256, RmsNormEps = 1e-5, RopeTheta = 500000.0, RopeScaling = Llama32Rope,
            TieWordEmbeddings = true, BosTokenId = 128000, EosTokenIds = [128001, 128008, 128009],
            MaxPositionEmbeddings = 131072, TorchDtype = "bfloat16",
        }),
        ("llama-3.2-3b", new LlamaConfig
        {
            HiddenSize = 3072, IntermediateSize = 8192, NumHiddenLayers = 28, NumAttentionHeads = 24, NumKeyValueHeads = 8,
            HeadDim = 128, VocabSize = 128256, RmsNormEps = 1e-5, RopeTheta = 500000.0, RopeScaling = Llama32Rope,
            TieWordEmbeddings = true, BosTokenId = 128000, EosTokenIds = [128001, 128008, 128009],
            MaxPositionEmbeddings = 131072, TorchDtype = "bfloat16",
        }),
        ("llama-3.1-8b", new LlamaConfig
        {
            HiddenSize = 4096, IntermediateSize = 14336, NumHiddenLayers = 32, NumAttentionHeads = 32, NumKeyValueHeads = 8,
            HeadDim = 128, VocabSize = 128256, RmsNormEps = 1e-5, RopeTheta = 500000.0, RopeScaling = Llama31Rope,
            TieWordEmbeddings = false, BosTokenId = 128000, EosTokenIds = [128001, 128008, 128009],
            MaxPositionEmbeddings = 131072, TorchDtype = "bfloat16",
        }),
    ];

    /// <summary>Names accepted by <see cref="Preset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = Array.AsReadOnly(Presets.Select(p => p.Name).ToArray());

    /// <summary>The configuration of a known Llama 3.x model, by name (case-insensitive), e.g. "llama-3.2-1b".</summary>
    /// <exception cref="ModelConfigException">Unknown name; the message lists the known ones.</exception>
    public static LlamaConfig Preset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var (n, c) in Presets)
        {
            if (string.Equals(n, name, StringComparison.OrdinalIgnoreCase)) return c;
        }
        throw new ModelConfigException($"unknown model preset '{name}'; known presets: {string.Join(", ", PresetNames)}");
    }
}

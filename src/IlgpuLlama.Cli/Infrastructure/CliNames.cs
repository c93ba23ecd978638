namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// The CLI's names for the engine's parameters: engine messages carry placeholders
/// (<see cref="EngineParameters"/>) and the CLI shows its own flags in their place, so a program
/// using the library never sees a flag and a CLI user never sees a property name.
/// </summary>
public static class CliNames
{
    /// <summary>The flag that sets <paramref name="parameter"/>.</summary>
    public static string Flag(EngineParameter parameter) => parameter switch
    {
        EngineParameter.Model => "--model",
        EngineParameter.MaxBatchSize => "--max-batch-size",
        EngineParameter.MaxSeqLen => "--max-seq-len",
        EngineParameter.PrefillChunk => "--prefill-chunk",
        EngineParameter.WeightFormat => "--dtype",
        EngineParameter.KvCacheType => "--kv-cache-dtype",
        EngineParameter.Accumulation => "--accumulate",
        EngineParameter.Device => "--device",
        EngineParameter.DirectLaunch => "--no-cuda-graph",
        EngineParameter.MaxNewTokens => "--max-new-tokens",
        EngineParameter.Tokens => "--tokens",
        EngineParameter.Temperature => "--temperature",
        EngineParameter.TopK => "--top-k",
        EngineParameter.TopP => "--top-p",
        EngineParameter.MinP => "--min-p",
        EngineParameter.RepetitionPenalty => "--repetition-penalty",
        EngineParameter.Seed => "--seed",
        EngineParameter.OutputDirectory => "--out",
        EngineParameter.Context => "--ctx",
        _ => parameter.ToString(),
    };

    /// <summary>A message with parameter placeholders, in the CLI's words.</summary>
    public static string Render(string template) => EngineParameters.Render(template, Flag);

    /// <summary>The message of an exception in the CLI's words (engine messages get their flags).</summary>
    public static string Message(Exception e) => e is IEngineMessage m ? Render(m.Template) : e.Message;

    /// <summary>An engine warning in the CLI's words.</summary>
    public static string Render(Engine.EngineNotice notice) => notice.Render(Flag);
}

namespace IlgpuLlama.Text;

/// <summary>
/// A tokenizer could not be found or loaded. The message is a single line meant to be shown to
/// the user as is, so it names the files involved and what to do instead.
/// </summary>
public sealed class TokenizerException : Exception, IEngineMessage
{
    public TokenizerException(string message) : base(EngineParameters.Render(message, EngineParameters.LibraryName)) => Template = message;

    public TokenizerException(string message, Exception innerException)
        : base(EngineParameters.Render(message, EngineParameters.LibraryName), innerException) => Template = message;

    /// <inheritdoc/>
    public string Template { get; }

    /// <inheritdoc/>
    public EngineParameter? Parameter => null;

    /// <summary>True when the directory has no tokenizer file at all (a front end may then name its way around one).</summary>
    public bool NoTokenizerFile { get; init; }
}

namespace IlgpuLlama.Constraints;

/// <summary>
/// A JSON schema that cannot constrain generation: malformed (not a schema, a keyword with a value of
/// the wrong kind, nothing can satisfy it). The message is one line, meant for an HTTP 400 body.
/// </summary>
public class JsonSchemaException : ArgumentException
{
    /// <summary>Creates the exception with a one-line message.</summary>
    public JsonSchemaException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}

/// <summary>
/// A JSON schema that uses keywords structured output does not implement. <see cref="Keywords"/> lists
/// every one found (with where), and the message names them and the supported subset.
/// </summary>
public sealed class UnsupportedSchemaException : JsonSchemaException
{
    /// <summary>Creates the exception for the unsupported keywords found, each as "keyword (at JSON pointer)".</summary>
    public UnsupportedSchemaException(IReadOnlyList<string> keywords)
        : base($"unsupported JSON Schema keywords: {string.Join(", ", keywords)}; supported: {string.Join(", ", JsonGrammar.SupportedKeywords)} " +
            $"(ignored annotations: {string.Join(", ", JsonGrammar.IgnoredKeywords)})")
    {
        Keywords = keywords;
    }

    /// <summary>Each unsupported keyword found, as "keyword (at /json/pointer)".</summary>
    public IReadOnlyList<string> Keywords { get; }
}

using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace IlgpuLlama.Server;

/// <summary>
/// The chat page at GET / : one HTML file with its CSS and JavaScript inline (chat.html, embedded in
/// this assembly, so the packaged tool has it), no build step and no external URL, so that it works on
/// a machine without internet. It talks to POST /v1/chat/completions with <c>stream: true</c>.
/// The page holds no data and is served without the API key; the requests it makes carry the key
/// (a field on the page, kept in the tab's sessionStorage). Its Content-Security-Policy allows
/// this one inline script (by its hash) and connections to this server only.
/// </summary>
public static class ChatPage
{
    public const string Path = "/";
    const string Resource = "IlgpuLlama.Server.chat.html";

    static readonly Lazy<(byte[] Html, string Csp)> Page = new(Load);

    static (byte[] Html, string Csp) Load()
    {
        using var stream = typeof(ChatPage).Assembly.GetManifestResourceStream(Resource)
            ?? throw new InvalidOperationException($"the chat page ({Resource}) is not embedded in {typeof(ChatPage).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        string html = reader.ReadToEnd();
        // The hash of the inline script's exact text (between <script> and </script>), for the CSP.
        int open = html.IndexOf("<script>", StringComparison.Ordinal) + "<script>".Length;
        int close = html.IndexOf("</script>", open, StringComparison.Ordinal);
        string hash = Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(html[open..close])));
        string csp = $"default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; " +
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
        return (Encoding.UTF8.GetBytes(html), csp);
    }

    /// <summary>The page's HTML (for tests).</summary>
    public static string Html => Encoding.UTF8.GetString(Page.Value.Html);

    /// <summary>Answers GET and HEAD / with the page.</summary>
    internal static Task Serve(HttpContext c)
    {
        var (html, csp) = Page.Value;
        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/html; charset=utf-8";
        c.Response.ContentLength = html.Length;
        c.Response.Headers.CacheControl = "no-cache";
        c.Response.Headers.ContentSecurityPolicy = csp;
        c.Response.Headers.XContentTypeOptions = "nosniff";
        c.Response.Headers["Referrer-Policy"] = "no-referrer";
        return HttpMethods.IsHead(c.Request.Method) ? Task.CompletedTask : c.Response.Body.WriteAsync(html).AsTask();
    }
}

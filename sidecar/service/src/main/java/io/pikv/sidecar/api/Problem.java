package io.pikv.sidecar.api;

/**
 * An RFC 9457 problem detail, served as {@code application/problem+json}.
 *
 * @param type     a URI naming the kind of problem ({@code urn:pikv:problem:<kind>})
 * @param title    short summary of the kind
 * @param status   the HTTP status
 * @param detail   what was wrong with this request, in a sentence a person can act on
 * @param instance the request path
 */
public record Problem(String type, String title, int status, String detail, String instance) {
    public static final String MEDIA_TYPE = "application/problem+json";
}
